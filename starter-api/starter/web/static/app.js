// The code browser: sign in for a token, search as you type, open a code, and (admins) change codes.
//
// The token lives in sessionStorage (gone with the tab); the password is sent once, to
// /auth/request-token, and never stored. Every other call carries "Authorization: Bearer".
// The page's state is its URL (?q=...&page=...&code=...), so a link reopens the same view.
// Requests go without the browser's credentials (credentials: "omit"): a 401 then reaches this
// script instead of making the browser ask for a password in a dialog of its own.

const API = "/api/v1.0/pxcodes/";
const SESSION_KEY = "starter.session";
const DEBOUNCE_MS = 150;
const PER_PAGE = 20;

const $ = (id) => document.getElementById(id);

// --- the session -------------------------------------------------------------------------

function loadSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY));
    return session && session.token && Date.now() < session.expiresAt ? session : null;
  } catch {
    return null;
  }
}

let session = loadSession();

class SessionExpired extends Error {}

function base64Utf8(text) {
  return btoa(String.fromCharCode(...new TextEncoder().encode(text)));
}

async function signIn(username, password) {
  const response = await fetch("/auth/request-token", {
    headers: { Authorization: "Basic " + base64Utf8(`${username}:${password}`) },
    credentials: "omit",
    cache: "no-store",
  });
  if (!response.ok) {
    throw new Error(response.status === 401 ? "Wrong user name or password." : await errorMessage(response));
  }
  const body = await response.json();
  session = {
    token: body.token,
    username,
    isAdmin: Boolean(body.is_admin),
    expiresAt: Date.now() + body.expiration * 1000,
  };
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

function signOut(note) {
  session = null;
  sessionStorage.removeItem(SESSION_KEY);
  showSignIn(note);
}

// A call to the API with the token; an expired or revoked token asks to sign in again.
async function api(path, options = {}) {
  if (!session || Date.now() >= session.expiresAt) {
    signOut("Your session has expired: sign in again.");
    throw new SessionExpired();
  }
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${session.token}` };
  const response = await fetch(path, { ...options, headers, credentials: "omit" });
  if (response.status === 401) {
    signOut("Your session has expired: sign in again.");
    throw new SessionExpired();
  }
  return response;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return body.message || `${response.status} ${response.statusText}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

// --- the URL as state --------------------------------------------------------------------

function readUrl() {
  const params = new URLSearchParams(location.search);
  return { q: params.get("q") || "", page: Number(params.get("page")) || 1, code: params.get("code") || "" };
}

function writeUrl(state, push) {
  const params = new URLSearchParams();
  if (state.q) params.set("q", state.q);
  if (state.page > 1) params.set("page", String(state.page));
  if (state.code) params.set("code", state.code);
  const url = params.toString() ? `?${params}` : location.pathname;
  history[push ? "pushState" : "replaceState"](state, "", url);
}

const state = readUrl();

// --- search ------------------------------------------------------------------------------

let latestSearch = 0;
let inFlight = null;
let debounceTimer = null;
let shown = { items: [], active: -1, meta: null };

function searchSoon() {
  clearTimeout(debounceTimer);
  debounceTimer = setTimeout(() => search(1), DEBOUNCE_MS);
}

// Only the answer to the newest search is shown: older ones are aborted, and ignored if late.
async function search(page) {
  const number = ++latestSearch;
  if (inFlight) inFlight.abort();
  inFlight = new AbortController();
  state.q = $("q").value.trim();
  state.page = page;
  const params = new URLSearchParams({ per_page: String(PER_PAGE), page: String(page) });
  if (state.q) params.set("q", state.q);
  let body;
  try {
    const response = await api(`${API}?${params}`, { signal: inFlight.signal });
    if (number !== latestSearch) return;
    if (!response.ok) {
      showStatus(await errorMessage(response), "error");
      renderResults([], null);
      return;
    }
    body = await response.json();
  } catch (error) {
    if (error.name === "AbortError" || error instanceof SessionExpired) return;
    if (number === latestSearch) showStatus("The service did not answer: try again.", "error");
    return;
  }
  if (number !== latestSearch) return;
  writeUrl(state, false);
  renderResults(body.items, body.meta);
}

function showStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = kind || "";
}

function renderResults(items, meta) {
  shown = { items, active: -1, meta };
  const list = $("results");
  list.replaceChildren(...items.map((item, i) => resultRow(item, i, meta)));
  $("q").setAttribute("aria-expanded", items.length ? "true" : "false");
  $("q").removeAttribute("aria-activedescendant");
  if (!meta) {
    $("pager").hidden = true;
    return;
  }
  let text = `${meta.total} ${meta.total === 1 ? "code" : "codes"}`;
  if (meta.fuzzy) text = `No exact match: showing ${text} for “${meta.words.join(" ")}”`;
  else if (meta.total === 0 && state.q) text = `No code matches “${state.q}”`;
  showStatus(text, meta.fuzzy ? "notice" : "");
  $("pager").hidden = meta.pages <= 1;
  $("page-of").textContent = `Page ${meta.page} of ${meta.pages}`;
  $("prev").disabled = !meta.prev;
  $("next").disabled = !meta.next;
}

function resultRow(item, index, meta) {
  const row = document.createElement("li");
  row.id = `result-${index}`;
  row.setAttribute("role", "option");
  row.setAttribute("aria-selected", "false");
  row.dataset.pxcode = item.pxcode;
  const words = meta && meta.words ? meta.words : [];
  const code = document.createElement("span");
  code.className = "code";
  code.append(...highlighted(item.pxcode, words, false));
  const title = document.createElement("span");
  title.className = "title";
  title.append(...highlighted(item.procedure, words, true));
  row.append(code, title);
  row.addEventListener("click", () => openCode(item.pxcode, true));
  return row;
}

function escapeRegex(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// The text as nodes, with the matched word prefixes in <mark> (built as text: no HTML is parsed).
function highlighted(text, words, inWords) {
  if (!words.length) return [document.createTextNode(text)];
  const alternatives = words.map(escapeRegex).sort((a, b) => b.length - a.length).join("|");
  const pattern = inWords ? new RegExp(`(^|[^A-Za-z0-9])(${alternatives})`, "gi") : new RegExp(`^()(${alternatives})`, "gi");
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(pattern)) {
    const start = match.index + match[1].length;
    nodes.push(document.createTextNode(text.slice(last, start)));
    const mark = document.createElement("mark");
    mark.textContent = match[2];
    nodes.push(mark);
    last = start + match[2].length;
  }
  nodes.push(document.createTextNode(text.slice(last)));
  return nodes;
}

function moveActive(step) {
  const count = shown.items.length;
  if (!count) return;
  const rows = $("results").children;
  if (shown.active >= 0) rows[shown.active].setAttribute("aria-selected", "false");
  shown.active = (shown.active + step + count) % count;
  const row = rows[shown.active];
  row.setAttribute("aria-selected", "true");
  row.scrollIntoView({ block: "nearest" });
  $("q").setAttribute("aria-activedescendant", row.id);
}

function onSearchKey(event) {
  if (event.key === "ArrowDown") moveActive(1);
  else if (event.key === "ArrowUp") moveActive(-1);
  else if (event.key === "Enter" && shown.active >= 0) openCode(shown.items[shown.active].pxcode, true);
  else if (event.key === "Escape") {
    $("q").value = "";
    search(1);
  } else return;
  event.preventDefault();
}

// --- one code ----------------------------------------------------------------------------

let current = null; // { pxcode, procedure, etag }

async function openCode(pxcode, push) {
  $("add").hidden = true;
  const response = await api(API + encodeURIComponent(pxcode)).catch(() => null);
  if (!response) return;
  if (!response.ok) {
    showDetailMessage(response.status === 404 ? `There is no code ${pxcode}.` : await errorMessage(response), "error");
    $("detail").hidden = false;
    $("detail-title").textContent = pxcode;
    $("detail-procedure").textContent = "";
    $("edit").hidden = true;
    current = null;
    return;
  }
  current = { ...(await response.json()), etag: response.headers.get("ETag") };
  state.code = current.pxcode;
  writeUrl(state, push);
  showDetail();
  $("detail-title").focus();
}

function showDetail() {
  $("detail").hidden = false;
  $("detail-title").textContent = current.pxcode;
  $("detail-title").tabIndex = -1;
  $("detail-procedure").textContent = current.procedure;
  $("detail-link").href = location.href;
  $("edit").hidden = !session.isAdmin;
  $("edit-procedure").value = current.procedure;
  showDetailMessage("", "");
}

function showDetailMessage(text, kind) {
  const box = $("detail-message");
  box.textContent = text;
  box.className = kind;
}

async function reloadCurrent() {
  const response = await api(API + encodeURIComponent(current.pxcode));
  if (response.ok) current = { ...(await response.json()), etag: response.headers.get("ETag") };
  return response;
}

// If-Match carries the ETag the code had when it was opened: a change made meanwhile by
// someone else is a 412, shown as a conflict with the code as it is now.
async function saveEdit(event) {
  event.preventDefault();
  const response = await api(API + encodeURIComponent(current.pxcode), {
    method: "PATCH",
    headers: { "Content-Type": "application/json", "If-Match": current.etag },
    body: JSON.stringify({ procedure: $("edit-procedure").value }),
  }).catch(() => null);
  if (!response) return;
  if (response.status === 412) return showConflict("changed");
  if (!response.ok) return showDetailMessage(await errorMessage(response), "error");
  current = { ...(await response.json()), etag: response.headers.get("ETag") };
  showDetail();
  showDetailMessage("Saved.", "notice");
  search(state.page);
}

async function deleteCurrent() {
  if (!window.confirm(`Delete code ${current.pxcode}?`)) return;
  const response = await api(API + encodeURIComponent(current.pxcode), {
    method: "DELETE",
    headers: { "If-Match": current.etag },
  }).catch(() => null);
  if (!response) return;
  if (response.status === 412) return showConflict("changed");
  if (response.status === 404) return showConflict("deleted");
  if (!response.ok) return showDetailMessage(await errorMessage(response), "error");
  const gone = current.pxcode;
  closeDetail();
  await search(state.page);
  showStatus(`Deleted ${gone}. ${$("status").textContent}`, "notice");
}

async function showConflict(what) {
  const mine = $("edit-procedure").value;
  const response = await reloadCurrent().catch(() => null);
  if (response && response.status === 404) {
    $("edit").hidden = true;
    return showDetailMessage("Conflict: someone else deleted this code meanwhile. Nothing was changed.", "conflict");
  }
  showDetail();
  search(state.page); // the list shows the code as it is now too
  $("edit-procedure").value = mine;
  showDetailMessage(
    `Conflict: someone else ${what} this code after you opened it, so your change was not saved. ` +
      "The title above is the current one; save again to replace it with yours.",
    "conflict",
  );
}

function closeDetail() {
  current = null;
  state.code = "";
  writeUrl(state, true);
  $("detail").hidden = true;
}

// --- adding a code -----------------------------------------------------------------------

function openAdd() {
  $("detail").hidden = true;
  $("add").hidden = false;
  $("add-message").textContent = "";
  $("add-pxcode").focus();
}

async function createCode(event) {
  event.preventDefault();
  const pxcode = $("add-pxcode").value.trim();
  const response = await api(API, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ pxcode, procedure: $("add-procedure").value }),
  }).catch(() => null);
  if (!response) return;
  if (response.status === 409) {
    $("add-message").className = "conflict";
    $("add-message").textContent = `A code ${pxcode} already exists.`;
    return;
  }
  if (!response.ok) {
    $("add-message").className = "error";
    $("add-message").textContent = await errorMessage(response);
    return;
  }
  $("add-form").reset();
  $("add").hidden = true;
  await openCode(pxcode, true);
  showDetailMessage("Created.", "notice");
  search(state.page);
}

// --- the views ---------------------------------------------------------------------------

function showSignIn(note) {
  $("browser-view").hidden = true;
  $("who").hidden = true;
  $("sign-in-view").hidden = false;
  $("sign-in-note").textContent = note || "";
  $("password").value = "";
  $("username").focus();
}

function showBrowser() {
  $("sign-in-view").hidden = true;
  $("browser-view").hidden = false;
  $("who").hidden = false;
  $("who-name").textContent = `Signed in as ${session.username}${session.isAdmin ? " (admin)" : ""}`;
  for (const element of document.querySelectorAll(".admin-only")) element.hidden = !session.isAdmin;
  $("detail").hidden = true;
  $("add").hidden = true;
  $("q").value = state.q;
  $("q").focus();
  search(state.page);
  if (state.code) openCode(state.code, false);
}

async function onSignIn(event) {
  event.preventDefault();
  $("sign-in-error").textContent = "";
  try {
    await signIn($("username").value, $("password").value);
  } catch (error) {
    $("password").value = "";
    $("sign-in-error").textContent = error.message;
    return;
  }
  $("password").value = "";
  showBrowser();
}

function start() {
  $("sign-in").addEventListener("submit", onSignIn);
  $("sign-out").addEventListener("click", () => signOut("You are signed out."));
  $("q").addEventListener("input", searchSoon);
  $("q").addEventListener("keydown", onSearchKey);
  $("prev").addEventListener("click", () => search(state.page - 1));
  $("next").addEventListener("click", () => search(state.page + 1));
  $("edit").addEventListener("submit", saveEdit);
  $("delete").addEventListener("click", deleteCurrent);
  $("add-open").addEventListener("click", openAdd);
  $("add-form").addEventListener("submit", createCode);
  $("add-cancel").addEventListener("click", () => ($("add").hidden = true));
  window.addEventListener("popstate", () => {
    Object.assign(state, readUrl());
    if (session) showBrowser();
  });
  if (session) showBrowser();
  else showSignIn();
}

start();
