"""A trivial WSGI callable for the server's ceiling: the service's own answers, replayed.

bench.py records, for each endpoint it measures, the body, Content-Type and ETag the service
answered, writes them to the JSON file named by ``$CEILING_RESPONSES``, and serves them with
this callable under the same server and settings (``python serve.py ceiling_app:app``, or
gunicorn). No Flask, no database, no auth check: what is left is the server's own cost per
request for the same bytes (and ``If-None-Match`` -> 304 as the service answers it).
"""

import json
import os

with open(os.environ["CEILING_RESPONSES"], encoding="utf-8") as f:
    _RESPONSES = {
        key: (value["body"].encode("latin-1"), value["content_type"], value["etag"])
        for key, value in json.load(f).items()
    }
_DEFAULT = next(iter(_RESPONSES.values()))


def app(environ, start_response):
    query = environ.get("QUERY_STRING")
    key = environ.get("PATH_INFO", "/") + ("?" + query if query else "")
    body, content_type, etag = _RESPONSES.get(key, _DEFAULT)
    if etag and environ.get("HTTP_IF_NONE_MATCH") == etag:
        start_response("304 Not Modified", [("ETag", etag)])
        return [b""]
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    if etag:
        headers.append(("ETag", etag))
    start_response("200 OK", headers)
    return [body]
