"""Search that ranks: word prefixes, all words, the relevance order, typo corrections; on both databases."""

from urllib.parse import urlencode

import pytest
from helpers import PASSWORD, USERNAME, recorded_sql

from starter import queries
from starter.api.pxcodes import page_caches
from starter.db import db
from starter.models import PxCode, User

LIST = "/api/v1.0/pxcodes/"

# Titles chosen so that each rank and each rule has a code that shows it.
CODES = {
    "216": "CARDIAC VALVE AND OTHER MAJOR CARDIOTHORACIC PROCEDURES W CARD CATH W MCC",
    "219": "CARDIAC VALVE AND OTHER MAJOR CARDIOTHORACIC PROCEDURES W/O CARD CATH W MCC",
    "266": "ENDOVASCULAR CARDIAC VALVE REPLACEMENT AND SUPPLEMENT PROCEDURES W MCC",
    "306": "CARDIAC CONGENITAL AND VALVULAR DISORDERS W MCC",
    "X01": "VALVE REPAIR, CARDIAC",  # both words, the other way round
    "X02": "PERICARDIAL WINDOW WITH VALVE",  # "cardi" inside a word only
    "469": "MAJOR HIP AND KNEE JOINT REPLACEMENT OR REATTACHMENT OF LOWER EXTREMITY W MCC",
    "470": "MAJOR HIP AND KNEE JOINT REPLACEMENT OR REATTACHMENT OF LOWER EXTREMITY W/O MCC",
    "482": "HIP AND FEMUR PROCEDURES EXCEPT MAJOR JOINT W/O CC/MCC",
    "2160": "SAMPLE CODE THAT STARTS WITH 216",
    "A10": "TITLE NAMING 216 AS A WORD",
    "246": "PERC CARDIOVASC PROC W DRUG-ELUTING STENT W MCC OR 4+ VESSELS/STENTS",
}


@pytest.fixture
def client(make_empty_app):
    app = make_empty_app()
    with app.app_context():
        db.session.add_all(PxCode(pxcode=code, procedure=title) for code, title in CODES.items())
        user = User(username=USERNAME, is_admin=True)
        user.password = PASSWORD
        db.session.add(user)
        db.session.commit()
    return app.test_client()


def _search(client, auth, query):
    response = client.get(f"{LIST}?{query}", headers=auth.basic())
    assert response.status_code == 200, response.json
    return response


def _codes(response):
    return [item["pxcode"] for item in response.json["items"]]


# (q, codes in the order they must come, words searched, fuzzy)
RANKING = [
    # Words as prefixes of title words, every word, in the order typed first, then by code.
    ("cardi valv", ["216", "219", "266", "306", "X01"], ["cardi", "valv"], False),
    ("valv cardi", ["216", "219", "X01", "266", "306"], ["valv", "cardi"], False),  # VALVE .. CARDIOTHORACIC
    ("CARDIAC valve", ["216", "219", "266", "X01"], ["cardiac", "valve"], False),
    # The exact code, then codes it starts, then titles that have it as a word.
    ("216", ["216", "2160", "A10"], ["216"], False),
    ("21", ["216", "2160", "219", "A10"], ["21"], False),
    ("x0", ["X01", "X02"], ["x0"], False),
    # Code and title words together.
    ("46 hip", ["469"], ["46", "hip"], False),
    # Every word must match; words are literal text.
    ("cardi valv zzzz", [], ["cardi", "valv", "zzzz"], False),
    ("4+", ["246"], ["4+"], False),
    ("w/o", ["219", "470", "482"], ["w/o"], False),
    ("%", [], ["%"], False),
    # Inside a word is not a prefix ("cardi valv" has no X02): "ardiac" matches as a typo only.
    ("ardiac", ["216", "219", "266", "306", "X01"], ["cardiac"], True),
    # Typos: corrected only when nothing matches as typed, and said so.
    ("hip replacment", ["469", "470"], ["hip", "replacement"], True),
    ("cardaic", ["216", "219", "266", "306", "X01"], ["cardiac"], True),
    ("cardaic valv", ["216", "219", "266", "306", "X01"], ["cardiac", "valv"], True),
    ("hip replacement", ["469", "470"], ["hip", "replacement"], False),
    ("knee hip", ["469", "470"], ["knee", "hip"], False),  # all found: no correction though out of order
    ("endovascualr", ["266"], ["endovascular"], True),
]


@pytest.mark.parametrize(("q", "codes", "words", "fuzzy"), RANKING, ids=[r[0] for r in RANKING])
def test_ranking(client, auth, q, codes, words, fuzzy):
    body = _search(client, auth, urlencode({"q": q})).json
    assert _codes_of(body) == codes
    assert body["meta"]["words"] == words
    assert body["meta"]["fuzzy"] is fuzzy


def _codes_of(body):
    return [item["pxcode"] for item in body["items"]]


def test_relevance_is_the_default_with_q_and_sort_still_works(client, auth):
    ranked = _codes(_search(client, auth, "q=valv cardi"))
    assert ranked == _codes(_search(client, auth, "q=valv cardi&sort=relevance"))
    assert _codes(_search(client, auth, "q=valv cardi&sort=pxcode")) == sorted(ranked)
    assert _codes(_search(client, auth, "q=valv cardi&sort=-pxcode")) == sorted(ranked, reverse=True)
    # Without words there is nothing to rank: the code order.
    assert _codes(_search(client, auth, "sort=relevance")) == sorted(CODES)
    assert "words" not in _search(client, auth, "").json["meta"]


@pytest.mark.parametrize("q", ["cardi", "cardi valv", "valv cardi", "w", "hip replacment"])
def test_relevance_pages_by_offset_and_by_key_equal_the_whole(client, auth, monkeypatch, q):
    whole = _codes(_search(client, auth, f"q={q}"))

    def paged():
        for cache in page_caches(client.application):
            cache.clear()
        first = _search(client, auth, f"q={q}&per_page=2").json["meta"]
        return [
            code
            for n in range(1, first["pages"] + 1)
            for code in _codes(_search(client, auth, f"q={q}&per_page=2&page={n}"))
        ]

    assert paged() == whole and len(whole) >= 2
    monkeypatch.setattr(queries, "SORT_MATCHES_MAX", -1)
    monkeypatch.setattr(queries, "OFFSET_SCAN_MAX", -1)  # every page found by its first key
    assert paged() == whole


def test_etag_and_ranking_follow_the_data(client, auth):
    first = _search(client, auth, "q=valv cardi")
    assert _codes(first) == ["216", "219", "X01", "266", "306"]
    item = client.get(f"{LIST}X01", headers=auth.basic())
    edited = client.patch(
        f"{LIST}X01",
        json={"procedure": "REPAIR OF CARDIAC VALVE"},
        headers={**auth.basic(), "If-Match": item.headers["ETag"]},
    )
    assert edited.status_code == 200, edited.json
    again = client.get(f"{LIST}?q=valv cardi", headers={**auth.basic(), "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 200
    assert again.headers["ETag"] != first.headers["ETag"]
    assert _codes(again) == ["216", "219", "266", "306", "X01"]  # X01 no longer has them in this order


def test_corrections_follow_the_data(client, auth):
    """The title words (PostgreSQL: a table kept by triggers) change with every write."""
    assert _codes(_search(client, auth, "q=transplantaton")) == []
    created = client.post(LIST, json={"pxcode": "001", "procedure": "HEART TRANSPLANTATION"}, headers=auth.basic())
    assert created.status_code == 201
    body = _search(client, auth, "q=transplantaton").json
    assert (_codes_of(body), body["meta"]["fuzzy"]) == (["001"], True)
    for code in ("469", "470", "266"):
        item = client.get(f"{LIST}{code}", headers=auth.basic())
        deleted = client.delete(f"{LIST}{code}", headers={**auth.basic(), "If-Match": item.headers["ETag"]})
        assert deleted.status_code == 204
    body = _search(client, auth, "q=hip replacment").json
    assert (_codes_of(body), body["meta"]["fuzzy"], body["meta"]["words"]) == ([], False, ["hip", "replacment"])


def test_title_words_table_counts_every_write(client):
    """PostgreSQL: starter_pxcode_words holds each title word with its uses, and nothing else, after
    inserts, updates, deletes and a TRUNCATE."""
    from collections import Counter

    from sqlalchemy import text

    from starter.typos import TITLE_WORD

    from sqlalchemy import inspect

    app = client.application
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            # SQLite reads the words from the titles instead (starter.typos): no table to keep.
            assert "starter_pxcode_words" not in inspect(db.engine).get_table_names()
            return
        db.session.execute(text("UPDATE starter_pxcodes SET procedure = 'NEW WORDS' WHERE pxcode = '216'"))
        db.session.execute(text("DELETE FROM starter_pxcodes WHERE pxcode IN ('219', 'X01')"))
        db.session.execute(text("INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('9', 'new, new')"))
        db.session.commit()
        expected = Counter()
        for (title,) in db.session.execute(text("SELECT procedure FROM starter_pxcodes")):
            expected.update(TITLE_WORD.findall(title.lower()))
        stored = dict(db.session.execute(text("SELECT word, uses FROM starter_pxcode_words")).all())
        assert stored == dict(expected)
        db.session.execute(text("TRUNCATE starter_pxcodes"))
        db.session.commit()
        assert db.session.scalar(text("SELECT count(*) FROM starter_pxcode_words")) == 0


def _statements_of(client, auth, query):
    """The statements one search sends, and its answer."""
    with recorded_sql(client.application) as statements:
        return statements, _search(client, auth, query).json


def test_words_looked_up_once_per_data_version(client, auth):
    """A search whose words an earlier search looked up at the same data version makes no
    look-up statement; after a write, the words are looked up again and the new code found."""
    _search(client, auth, "q=knee")  # credentials and versions known
    statements, body = _statements_of(client, auth, "q=cardi valv")
    assert sum("EXISTS" in s.upper() for s in statements) == 1
    statements, body = _statements_of(client, auth, "q=valv cardi")
    assert sum("EXISTS" in s.upper() for s in statements) == 0
    assert _codes_of(body) == ["216", "219", "X01", "266", "306"]
    created = client.post(LIST, json={"pxcode": "X03", "procedure": "VALVULOPLASTY, CARDIOLOGY"},
                          headers=auth.basic())
    assert created.status_code == 201
    statements, body = _statements_of(client, auth, "q=valv cardi")
    assert sum("EXISTS" in s.upper() for s in statements) == 1
    assert _codes_of(body) == ["216", "219", "X01", "X03", "266", "306"]


def test_a_correction_asks_only_for_the_words_nearest(client, auth):
    """PostgreSQL: whether a word starts a title word is known from the search's own look-up
    (``search.look_up``); correcting it asks the database only for the words nearest to it."""
    app = client.application
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("SQLite corrects from the titles read in process")
    _search(client, auth, "q=knee")  # credentials and versions known: only the search's statements below
    with recorded_sql(app) as statements:
        body = _search(client, auth, "q=hip replacment").json
    assert (_codes_of(body), body["meta"]["fuzzy"]) == (["469", "470"], True)
    # The versions, the look-up, the words nearest "replacment" ("hip" starts a word), the
    # look-up and the ranked page of the corrected words.
    assert len(statements) == 5
    assert sum("similarity" in s for s in statements) == 1
