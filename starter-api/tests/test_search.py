"""Listing arguments: word search, code prefix, sort, unknown arguments, Link and X-Total-Count."""

import pytest

from starter import queries
from starter.api.pxcodes import page_caches

LIST = "/api/v1.0/pxcodes/"


def _get(client, auth, query):
    response = client.get(f"{LIST}?{query}", headers=auth.basic())
    assert response.status_code == 200, response.json
    return response


def _codes(response):
    return [item["pxcode"] for item in response.json["items"]]


def test_q_matches_every_word_case_insensitively(client, auth):
    response = _get(client, auth, "q=hip replacement")
    assert _codes(response) == []
    response = _get(client, auth, "q=Hip fEMUR w/o")
    assert _codes(response) == ["482", "563"]  # 563: "...EXCEPT FEMUR, HIP, ... W/O MCC"
    response = _get(client, auth, "q=heart failure")
    assert _codes(response) == ["291", "292", "293"]
    for item in _get(client, auth, "q=sepsis").json["items"]:
        assert "SEPSIS" in item["procedure"]


def test_q_words_are_literal_not_patterns(client, auth):
    assert _codes(_get(client, auth, "q=%25")) == []
    assert _codes(_get(client, auth, "q=_")) == []
    assert _codes(_get(client, auth, "q=4%2B")) == ["246"]  # "4+ VESSELS"


def test_code_prefix(client, auth):
    assert _codes(_get(client, auth, "code=03")) == ["039"]
    assert _codes(_get(client, auth, "code=19")) == ["190", "191", "192", "193", "194", "195"]
    assert _codes(_get(client, auth, "code=948")) == ["948"]
    assert _codes(_get(client, auth, "code=9999")) == []


def test_arguments_combine(client, auth):
    response = _get(client, auth, "code=2&q=w/o&sort=-pxcode&per_page=3&page=2")
    body = response.json
    everything = _codes(_get(client, auth, "code=2&q=w/o&sort=-pxcode"))
    assert everything == sorted(everything, reverse=True)
    assert _codes(response) == everything[3:6]
    assert body["meta"]["total"] == len(everything)
    assert body["meta"]["next"].endswith("?code=2&q=w%2Fo&sort=-pxcode&per_page=3&page=3")


@pytest.mark.parametrize(
    ("sort", "key", "reverse"),
    [("pxcode", "pxcode", False), ("-pxcode", "pxcode", True),
     ("procedure", "procedure", False), ("-procedure", "procedure", True)],
)
def test_sort(client, auth, sort, key, reverse):
    items = _get(client, auth, f"sort={sort}").json["items"]
    pairs = [(item[key], item["pxcode"]) for item in items]
    assert pairs == sorted(pairs, reverse=reverse)
    assert len(items) == 100


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sort=title", "sort must be one of"),
        ("sort=--pxcode", "sort must be one of"),
        ("code=a/b", "code must be the start of a code"),
        ("code=" + "1" * 11, "code must be the start of a code"),
        ("q=" + "a" * 201, "q must be at most 200 characters"),
        ("q=" + "+".join("abcdefghijk"), "q must have at most 10 words"),
        ("q=a%00b", "control characters"),
        ("lang=en", "unknown query parameter 'lang'"),
        ("page=1&per_page=5&foo=", "unknown query parameter 'foo'"),
    ],
)
def test_bad_listing_arguments_are_400(client, auth, query, message):
    response = client.get(f"{LIST}?{query}", headers=auth.basic())
    assert response.status_code == 400
    assert message in response.json["message"]


def test_item_takes_no_arguments(client, auth):
    response = client.get(LIST + "039?x=1", headers=auth.basic())
    assert response.status_code == 400
    assert "unknown query parameter 'x'" in response.json["message"]


def test_link_header_and_total_count(client, auth):
    response = _get(client, auth, "per_page=10&page=3&sort=pxcode")
    assert response.headers["X-Total-Count"] == "100"
    base = "http://localhost/api/v1.0/pxcodes/?sort=pxcode&per_page=10"
    assert response.headers["Link"] == (
        f'<{base}&page=1>; rel="first", <{base}&page=2>; rel="prev", '
        f'<{base}&page=4>; rel="next", <{base}&page=10>; rel="last"'
    )
    first = _get(client, auth, "")
    assert first.headers["Link"] == (
        '<http://localhost/api/v1.0/pxcodes/?per_page=100&page=1>; rel="first", '
        '<http://localhost/api/v1.0/pxcodes/?per_page=100&page=1>; rel="last"'
    )


@pytest.mark.parametrize("sort", ["pxcode", "-pxcode", "procedure", "-procedure"])
@pytest.mark.parametrize("query", ["", "q=w/o", "code=2"])
def test_deep_pages_by_key_equal_offset_pages(client, auth, monkeypatch, sort, query):
    """Pages found by key (past the OFFSET limit) hold exactly what OFFSET would give."""
    pages = _get(client, auth, f"{query}&sort={sort}&per_page=7").json["meta"]["pages"]
    by_offset = [
        _codes(_get(client, auth, f"{query}&sort={sort}&per_page=7&page={n}"))
        for n in range(1, pages + 1)
    ]
    monkeypatch.setattr(queries, "OFFSET_SCAN_MAX", -1)
    for cache in page_caches(client.application):
        cache.clear()
    by_key = [
        _codes(_get(client, auth, f"{query}&sort={sort}&per_page=7&page={n}"))
        for n in range(1, pages + 1)
    ]
    assert by_key == by_offset
    assert pages >= 3 and all(by_offset)


@pytest.mark.parametrize("sort", ["pxcode", "-procedure"])
@pytest.mark.parametrize("query", ["q=w/o", "code=2", "q=failure&code=29"])
def test_sorted_matches_pages_equal_plain_pages(client, auth, monkeypatch, sort, query):
    """Small filtered listings are fetched whole and sorted: the same pages either way."""

    def pages():
        for cache in page_caches(client.application):
            cache.clear()
        count = _get(client, auth, f"{query}&sort={sort}&per_page=4").json["meta"]["pages"]
        return [
            _codes(_get(client, auth, f"{query}&sort={sort}&per_page=4&page={n}"))
            for n in range(1, count + 1)
        ]

    sorted_matches = pages()
    monkeypatch.setattr(queries, "SORT_MATCHES_MAX", -1)
    plain = pages()
    assert sorted_matches == plain
    assert all(sorted_matches)


@pytest.mark.parametrize(
    "query",
    [
        {"q": "heart"}, {"q": "w/o"}, {"q": "cardi"}, {"q": "0"}, {"q": "1 w"}, {"q": "pulmonary W/O"},
        {"q": "4+"}, {"q": "infarction 28"}, {"q": "mcc cc"}, {"q": "<96"}, {"q": "2 disorders"},
        {"code": "2"}, {"code": "29"}, {"code": "2", "q": "heart"}, {"code": "1", "q": "w"},
    ],
)
def test_the_python_test_of_a_row_agrees_with_the_search(app, client, auth, query):
    # The read cache decides with it which cached searches a change can touch.
    from starter.models import PxCode
    from starter.readcache.depends import Matching

    listing = client.get("/api/v1.0/pxcodes/", query_string={**query, "per_page": 100}, headers=auth.basic())
    assert listing.status_code == 200
    assert not listing.json["meta"].get("fuzzy")
    with app.app_context():
        rows = [(code.pxcode, code.procedure) for code in PxCode.query.all()]
    words = tuple(dict.fromkeys(query.get("q", "").lower().split()))
    matching = Matching(words, query.get("code", ""))
    selected = {pxcode for pxcode, title in rows if matching._selects(pxcode, title)}
    assert selected == set(_codes(listing))
    assert selected
