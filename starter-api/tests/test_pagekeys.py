"""Deep pages of the unfiltered listing (``starter.pagekeys``): exact across writes made outside
the API, with no count or ordered scan of the table on the request path once the anchors exist."""

import pytest
from sqlalchemy import create_engine, select, text

from starter import pagekeys, queries
from starter.api.pxcodes import page_caches
from starter.db import db
from starter.models import PxCode

LIST = "/api/v1.0/pxcodes/"
PER_PAGE = 4
SORTS = ["pxcode", "-pxcode", "procedure", "-procedure"]


@pytest.fixture
def outside(app):
    """A connection of its own, as psql would write: not the app's session, no API."""
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])

    def run(sql, **params):
        with engine.begin() as connection:
            connection.execute(text(sql), params)

    yield run
    engine.dispose()


@pytest.fixture
def by_anchors(monkeypatch):
    """Every page past the first from the anchors, three rows apart."""
    monkeypatch.setattr(queries, "OFFSET_SCAN_MAX", -1)
    monkeypatch.setattr(pagekeys, "SPACING", 3)


def _pages(client, auth, sort):
    first = client.get(f"{LIST}?sort={sort}&per_page={PER_PAGE}", headers=auth.basic()).json["meta"]
    pages = []
    for n in range(1, first["pages"] + 1):
        body = client.get(f"{LIST}?sort={sort}&per_page={PER_PAGE}&page={n}", headers=auth.basic()).json
        assert body["meta"]["total"] == first["total"]
        pages.append([item["pxcode"] for item in body["items"]])
    return first["total"], pages


def _truth(app, sort):
    """What OFFSET pages hold: every code in the order, cut in pages."""
    column = PxCode.pxcode if sort.lstrip("-") == "pxcode" else PxCode.procedure
    columns = [column] if column is PxCode.pxcode else [column, PxCode.pxcode]
    order = [c.desc() if sort.startswith("-") else c.asc() for c in columns]
    with app.app_context():
        codes = db.session.scalars(select(PxCode.pxcode).order_by(*order)).all()
        db.session.remove()
    return len(codes), [codes[i : i + PER_PAGE] for i in range(0, len(codes), PER_PAGE)]


def _anchor_version(app, sort):
    pager, _ = page_caches(app)
    return pager._anchors._sets[sort.lstrip("-")][0]


WRITES = [
    # New codes at the start, the middle and the end of both orders.
    "INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('000', 'AAA FIRST'), ('5005', 'MMM MIDDLE'),"
    " ('ZZZ', 'ZZZ LAST')",
    # Codes gone, one of them perhaps an anchor.
    "DELETE FROM starter_pxcodes WHERE pxcode IN ('039', '190', '470', '5005')",
    # Titles changed: rows that move in the title order (and stay in the code order).
    "UPDATE starter_pxcodes SET procedure = 'AAA ' || procedure WHERE pxcode IN ('291', '950')",
    "UPDATE starter_pxcodes SET procedure = 'ZZZ MOVED' WHERE pxcode = '057'",
    # Back and forth: nets out.
    "UPDATE starter_pxcodes SET procedure = substr(procedure, 5) WHERE pxcode = '291'",
]


@pytest.mark.parametrize("sort", SORTS)
def test_deep_pages_stay_exact_across_writes_from_outside(app, client, auth, outside, by_anchors, sort):
    assert _pages(client, auth, sort) == _truth(app, sort)
    built_at = _anchor_version(app, sort)
    for sql in WRITES:
        outside(sql)
        assert _pages(client, auth, sort) == _truth(app, sort), sql
    # The writes were counted in, not rebuilt away.
    assert _anchor_version(app, sort) == built_at


@pytest.mark.parametrize("sort", ["pxcode", "-procedure"])
def test_anchors_rebuilt_in_the_background_when_changes_pile_up(app, client, auth, outside, by_anchors,
                                                                  monkeypatch, sort):
    monkeypatch.setattr(pagekeys, "REBUILD_CHANGES", 1)
    _pages(client, auth, sort)
    page_caches(app)[0].close()  # the first build's thread has ended
    built_at = _anchor_version(app, sort)
    for sql in WRITES[:2]:
        outside(sql)
    assert _pages(client, auth, sort) == _truth(app, sort)  # served while the rebuild runs
    page_caches(app)[0].close()
    assert _anchor_version(app, sort) != built_at
    assert _pages(client, auth, sort) == _truth(app, sort)


def test_pages_near_either_end_build_no_anchors(app, client, auth):
    client.get(f"{LIST}?sort=-procedure&per_page=7&page=2", headers=auth.basic())
    client.get(f"{LIST}?sort=pxcode&per_page=7&page=15", headers=auth.basic())
    page_caches(app)[0].close()
    assert page_caches(app)[0]._anchors._sets == {}


def test_a_version_the_log_cannot_explain_rebuilds_them(app, client, auth, outside, by_anchors):
    _pages(client, auth, "procedure")
    built_at = _anchor_version(app, "procedure")
    # A version bumped by hand, no log row: the changes are unknown.
    outside("UPDATE starter_data_version SET version = version + 1 WHERE id = 1")
    outside(WRITES[0])
    assert _pages(client, auth, "procedure") == _truth(app, "procedure")
    assert _anchor_version(app, "procedure") != built_at


@pytest.mark.parametrize("sort", SORTS)
def test_no_count_or_ordered_scan_on_the_request_path(app, client, auth, outside, by_anchors, sql_log, sort):
    _pages(client, auth, sort)  # the anchors are built
    outside(WRITES[0])
    outside(WRITES[2])
    with sql_log() as statements:
        total, pages = _pages(client, auth, sort)
    assert (total, pages) == _truth(app, sort)
    scans = [s for s in statements if "count(" in s.lower() or "row_number" in s.lower()]
    assert scans == []
    assert len(pages) > 20
