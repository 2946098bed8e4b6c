"""The pages in a real browser: Debian's chromium, driven by Playwright, against the real server.

``python serve.py`` (tests/servers.py ``ProductionServer``: granian, the image's settings, the
read cache on) on a private PostgreSQL holding all 751 MS-DRGs: sign in, search as you type,
open a code by keyboard and by its link, an admin edits while a second editor gets the
conflict, add and delete, an expired token, sign out; axe-core finds no serious accessibility
violation; no Content-Security-Policy violation. The docs page lists every operation and
"Try it out" calls succeed with basic auth and with a Bearer token. Then the same browser on
SQLite without the read cache.

Playwright's Python package only drives the browser: the browser is Debian's
(``$CHROMIUM``, default /usr/bin/chromium, installed by .ci/run); nothing downloads one.
Without it the tests skip locally and fail under CI=true. Screenshots of each step go to
``$SCREENSHOT_DIR`` (default starter-api/test-artifacts/screenshots/, git-ignored).
"""

import json
import os
import threading
import time
from pathlib import Path

import pytest
import requests
from helpers import in_ci, load_starter_data
from servers import REQUEST_TIMEOUT, ProductionServer

from starter import create_app
from starter.db import db, recreate_tables
from starter.http.headers import PAGE_POLICY
from starter.importer import load_rows, parse_file

APP_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", APP_ROOT / "test-artifacts" / "screenshots"))
AXE = Path(__file__).with_name("vendor") / "axe.min.js"
MSDRG = APP_ROOT / "data" / "msdrg_full.tsv"
DOCUMENT = APP_ROOT / "starter" / "api" / "openapi.json"
ADMIN, ADMIN_PASSWORD = "ada", "ada-password"
EDITOR, EDITOR_PASSWORD = "grace", "grace-password"  # a second admin
READER, READER_PASSWORD = "bob", "bob-password"
# The promise: ranked results on screen within this long after the last key.
ANSWER_WITHIN_MS = 1000
STEP_TIMEOUT_MS = 10000  # any other wait in the page

if in_ci():
    from playwright import sync_api  # CI installs requirements-dev.txt: a missing Playwright is a failure
else:
    sync_api = pytest.importorskip("playwright.sync_api")


def _unavailable(reason):
    if in_ci():
        pytest.fail(f"the browser tests need Debian's chromium in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        _unavailable(f"no browser at {CHROMIUM} (apt-get install chromium)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {SCREENSHOTS}")
    with sync_api.sync_playwright() as playwright:
        # As root (CI) chromium's sandbox cannot start; the pages are the project's own.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args, timeout=30000)
        yield instance
        instance.close()


def _load_codes_and_users():
    load_starter_data(
        [(ADMIN, ADMIN_PASSWORD, True), (EDITOR, EDITOR_PASSWORD, True), (READER, READER_PASSWORD, False)]
    )
    load_rows(parse_file(str(MSDRG)).rows)  # the other 651 MS-DRGs


@pytest.fixture(scope="module")
def browser_database(private_postgres):
    """A database on the private server: every MS-DRG and three users."""
    return private_postgres.create_database("starter_browser", _load_codes_and_users)


@pytest.fixture(scope="module")
def web(browser_database, tmp_path_factory):
    server = ProductionServer(browser_database, tmp_path_factory.mktemp("web"))
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


class Steps:
    """Numbered screenshots of one test's steps."""

    def __init__(self, prefix):
        self.prefix, self.count = prefix, 0

    def shot(self, page, name):
        self.count += 1
        path = SCREENSHOTS / f"{self.prefix}-{self.count:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


def _new_page(context):
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    # Runs through the DevTools protocol, which the page's policy does not govern.
    page.add_init_script(
        "window.__csp = []; document.addEventListener('securitypolicyviolation',"
        " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    problems = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.problems = problems
    return page


def _assert_clean(page):
    assert page.evaluate("window.__csp") == [], "Content-Security-Policy violations"
    # The browser logs every 4xx it gets ("Failed to load resource"): 401 and 412 are expected here.
    assert [p for p in page.problems if "Failed to load resource" not in p] == []


def _sign_in(page, base, username, password, query=""):
    page.goto(f"{base}/{query}")
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Search codes and titles").wait_for()


def _rows(page):
    return page.locator("#results li")


def _type_and_time(page, text):
    """Type ``text`` key by key; return milliseconds from the last key until the answer shows."""
    box = page.get_by_label("Search codes and titles")
    box.fill("")
    box.press_sequentially(text, delay=60)
    last_key = time.monotonic()
    page.wait_for_function(
        "q => new URLSearchParams(location.search).get('q') === q && !!document.querySelector('#results li')",
        arg=text,
        timeout=ANSWER_WITHIN_MS,
    )
    return (time.monotonic() - last_key) * 1000


def _codes(page):
    return _rows(page).locator(".code").all_inner_texts()


def _axe_serious(page):
    """axe-core's violations of impact serious or critical on the page as it is now."""
    page.evaluate(AXE.read_text())  # evaluated through DevTools: the page's policy allows no injection
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def test_code_browser(browser, web):
    base = web.base
    steps = Steps("browser")
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = _new_page(context)

    response = page.goto(base + "/")
    assert response.headers["content-security-policy"] == PAGE_POLICY
    assert "unsafe-inline" not in PAGE_POLICY and "unsafe-eval" not in PAGE_POLICY
    page.get_by_role("heading", name="Sign in").wait_for()
    assert _axe_serious(page) == []
    steps.shot(page, "sign-in")

    page.get_by_label("User name").fill(ADMIN)
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Wrong user name or password.").wait_for()
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_label("Search codes and titles").wait_for()
    stored = page.evaluate("JSON.stringify(sessionStorage) + JSON.stringify(localStorage)")
    assert "token" in stored and ADMIN_PASSWORD not in stored and "wrong" not in stored
    assert page.get_by_label("Search codes and titles").evaluate("e => e === document.activeElement")

    # Prefixes of title words, ranked: the words in the order typed first, then by code.
    took = _type_and_time(page, "cardi valv")
    assert _codes(page)[:8] == ["216", "217", "218", "219", "220", "221", "306", "307"]
    assert _rows(page).first.locator("mark").all_inner_texts() == ["CARDI", "VALV", "CARDI"]  # ..CARDIOTHORACIC
    print(f"\n'cardi valv': ranked results {took:.0f} ms after the last key")
    steps.shot(page, "search")

    # A misspelling: corrected, and the page says so.
    took = _type_and_time(page, "hip replacment")
    page.get_by_text("No exact match").wait_for()
    assert "“hip replacement”" in page.locator("#status").inner_text()
    assert all("HIP" in t and "REPLACEMENT" in t for t in _rows(page).locator(".title").all_inner_texts())
    print(f"'hip replacment': corrected results {took:.0f} ms after the last key")
    steps.shot(page, "typo")

    # Paging through a long list, then the keyboard: down twice, Enter opens the second code.
    _type_and_time(page, "w")
    page.get_by_text("Page 1 of").wait_for()
    first_page = _codes(page)
    page.get_by_role("button", name="Next page").click()
    page.get_by_text("Page 2 of").wait_for()
    assert _codes(page) != first_page and len(_codes(page)) == 20
    _type_and_time(page, "cardi valv")
    box = page.get_by_label("Search codes and titles")
    box.press("ArrowDown")
    box.press("ArrowDown")
    assert box.get_attribute("aria-activedescendant") == "result-1"
    box.press("Enter")
    page.locator("#detail-title").get_by_text("217").wait_for()
    link = page.get_by_role("link", name="Link to this code").get_attribute("href")
    assert "q=cardi+valv" in link and "code=217" in link
    assert _axe_serious(page) == []
    steps.shot(page, "detail")

    # The link, in a tab of its own (no session there yet): sign in, and the same view opens.
    other = _new_page(context)
    other.goto(link)
    other.get_by_label("User name").fill(READER)
    other.get_by_label("Password").fill(READER_PASSWORD)
    other.get_by_role("button", name="Sign in").click()
    other.locator("#detail-title").get_by_text("217").wait_for()
    assert other.get_by_label("Search codes and titles").input_value() == "cardi valv"
    assert not other.locator("#edit").is_visible()  # a reader gets no write controls
    other.close()

    # Two admins edit the same code: the second one's save is a conflict, said as such.
    editor_context = browser.new_context(viewport={"width": 1100, "height": 800})
    editor = _new_page(editor_context)
    _sign_in(editor, base, EDITOR, EDITOR_PASSWORD, "?q=039&code=039")
    editor.locator("#detail-title").get_by_text("039").wait_for()
    assert page.goto(base + "/?q=039&code=039").ok  # the same tab: its session holds
    page.locator("#detail-title").get_by_text("039").wait_for()
    page.locator("#detail").get_by_label("Title").fill("EXTRACRANIAL PROCEDURES W/O CC/MCC (EDITED)")
    page.get_by_role("button", name="Save").click()
    page.get_by_text("Saved.").wait_for()
    assert page.locator("#detail-procedure").inner_text() == "EXTRACRANIAL PROCEDURES W/O CC/MCC (EDITED)"
    editor.locator("#detail").get_by_label("Title").fill("EXTRACRANIAL PROCEDURES, SECOND EDITOR")
    editor.get_by_role("button", name="Save").click()
    conflict = editor.locator("#detail-message.conflict")
    conflict.get_by_text("Conflict: someone else changed this code").wait_for()
    assert editor.locator("#detail-procedure").inner_text() == "EXTRACRANIAL PROCEDURES W/O CC/MCC (EDITED)"
    steps.shot(editor, "conflict")
    _assert_clean(editor)
    editor_context.close()

    # Add a code, find it, delete it.
    page.get_by_role("button", name="Add a code").click()
    page.locator("#add").get_by_label("Code").fill("X9901")
    page.locator("#add-procedure").fill("BROWSER TEST PROCEDURE")
    page.get_by_role("button", name="Create").click()
    page.locator("#detail-title").get_by_text("X9901").wait_for()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete this code").click()
    page.get_by_text("Deleted X9901.").wait_for()
    assert requests.get(base + "/api/v1.0/pxcodes/X9901", auth=(ADMIN, ADMIN_PASSWORD),
                        timeout=REQUEST_TIMEOUT).status_code == 404

    # A stored token the server no longer accepts (expired, revoked): the page asks to sign in again.
    page.evaluate(
        "const s = JSON.parse(sessionStorage.getItem('starter.session'));"
        "s.token = s.token.slice(0, -4) + 'AAAA'; sessionStorage.setItem('starter.session', JSON.stringify(s));"
    )
    page.reload()  # the tab comes back to its stored session
    page.get_by_text("Your session has expired: sign in again.").wait_for()
    assert page.evaluate("sessionStorage.length") == 0
    steps.shot(page, "expired")
    _sign_in(page, base, ADMIN, ADMIN_PASSWORD)

    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("You are signed out.").wait_for()
    assert page.evaluate("sessionStorage.length + localStorage.length") == 0
    steps.shot(page, "signed-out")
    _assert_clean(page)
    context.close()


def _operations():
    document = json.loads(DOCUMENT.read_text())
    return [
        (op["tags"][0], op["operationId"])
        for item in document["paths"].values()
        for method, op in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def _try_it(page, operation, fill=None):
    block = page.locator(f"#operations-{operation}")
    block.locator(".opblock-summary").first.click()
    block.get_by_role("button", name="Try it out").click()
    for name, value in (fill or {}).items():
        block.locator(f"tr[data-param-name='{name}'] input").fill(value)
    block.get_by_role("button", name="Execute").click()
    status = block.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    return status.inner_text().strip(), block.locator(".live-responses-table tbody .microlight").first.inner_text()


def _authorize(page, fields):
    """Fill the "Authorize" dialog's fields (by input id) and apply each scheme that got one."""
    page.locator(".auth-wrapper .authorize").first.click()
    dialog = page.locator(".modal-ux")
    for field, value in fields.items():
        form = dialog.locator("form", has=page.locator(f"input#{field}"))
        form.locator(f"input#{field}").fill(value)
    for field in fields:
        form = dialog.locator("form", has=page.locator(f"input#{field}"))
        if form.locator("button.authorize").count():
            form.locator("button.authorize").click()
    dialog.locator(".close-modal").click()


def test_docs_page_lists_every_operation_and_tries_them(browser, web):
    base = web.base
    steps = Steps("docs")
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = _new_page(context)
    response = page.goto(base + "/docs")
    assert response.ok and response.headers["content-security-policy"] == PAGE_POLICY
    operations = _operations()
    page.locator(".opblock").first.wait_for()
    for tag, operation_id in operations:
        assert page.locator(f"#operations-{tag}-{operation_id}").count() == 1, operation_id
    assert page.locator(".opblock").count() == len(operations)
    steps.shot(page, "operations")

    # Basic auth: the "Authorize" dialog's basicAuth fields, then one code.
    _authorize(page, {"auth-basic-username": ADMIN, "auth-basic-password": ADMIN_PASSWORD})
    status, body = _try_it(page, "pxcodes-getPxcode", {"pxcode": "039"})
    assert status == "200" and '"pxcode": "039"' in body
    steps.shot(page, "try-it-basic")
    _assert_clean(page)

    # Bearer: a token, given to a fresh page's bearerAuth, lists codes.
    token = requests.get(base + "/auth/request-token", auth=(READER, READER_PASSWORD),
                         timeout=REQUEST_TIMEOUT).json()["token"]
    page = _new_page(context)
    page.goto(base + "/docs")
    _authorize(page, {"auth-bearer-value": token})
    status, body = _try_it(page, "pxcodes-listPxcodes", {"q": "cardi valv"})
    assert status == "200" and '"216"' in body
    steps.shot(page, "try-it-bearer")
    _assert_clean(page)
    context.close()


def test_code_browser_on_sqlite_without_the_read_cache(browser, tmp_path):
    """The same page on the embedded database, as `manage.py run` serves it (no read cache)."""
    from werkzeug.serving import make_server

    app = create_app({
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'browser.sqlite'}",
        "SECRET_KEY": "browser-test",
        "LOG_DIR": None,
        "READ_CACHE": False,
    })
    with app.app_context():
        recreate_tables()
        _load_codes_and_users()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    steps = Steps("sqlite")
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    try:
        page = _new_page(context)
        _sign_in(page, base, READER, READER_PASSWORD)
        _type_and_time(page, "cardaic valv")
        page.get_by_text("No exact match").wait_for()
        assert _codes(page)[:2] == ["216", "217"]
        page.get_by_label("Search codes and titles").press("ArrowDown")
        page.get_by_label("Search codes and titles").press("Enter")
        page.locator("#detail-title").get_by_text("216").wait_for()
        assert page.locator(".admin-only").first.is_hidden()
        steps.shot(page, "typo-detail")
        _assert_clean(page)
    finally:
        context.close()
        server.shutdown()
        thread.join(timeout=10)
        with app.app_context():
            db.engine.dispose()

