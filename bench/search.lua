-- wrk script for the search endpoints: each request takes the next path of the file named by
-- SEARCH_PATHS (one path with its query a line, each thread starting at its own place), so the
-- answers come from the database, not from a cache that saw the same URL. Prints ONE line,
-- as the peers' wrk_report.lua does:
--   BENCH rps=<n> p50_ms=<n> p99_ms=<n> non2xx=<n> sockerr=<n>

local paths = {}
for line in io.lines(os.getenv("SEARCH_PATHS")) do
   if #line > 0 then table.insert(paths, line) end
end
local threads = {}
local counter = 0

function setup(thread)
   thread:set("offset", counter * math.floor(#paths / 2))
   counter = counter + 1
   table.insert(threads, thread)
end

function init(args)
   n = 0
   bad_count = 0
end

function request()
   n = n + 1
   return wrk.format("GET", paths[(offset + n) % #paths + 1])
end

function response(status, headers, body)
   if status < 200 or status >= 300 then bad_count = bad_count + 1 end
end

function done(summary, latency, requests)
   local bad = 0
   for _, t in ipairs(threads) do bad = bad + (t:get("bad_count") or 0) end
   local e = summary.errors
   io.write(string.format("BENCH rps=%.1f p50_ms=%.3f p99_ms=%.3f non2xx=%d sockerr=%d\n",
      summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
      latency:percentile(99) / 1000, bad, e.connect + e.read + e.write + e.timeout))
end
