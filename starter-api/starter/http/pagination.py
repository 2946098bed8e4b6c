"""Pagination: page arguments, pages of an ordered listing, the seed's ``meta`` and a Link header.

Counting and deep pages must not grow with the table. Both are cached per data
version (any write changes the version, so a cached figure is never stale):
the total is counted once per version and listing, and a page deep in the
listing is fetched by its first key (keyset) instead of an OFFSET scan; the
first key of every page is computed once per version, listing and page size.
"""

import math
from dataclasses import dataclass
from urllib.parse import urlencode

from flask import current_app, request, url_for
from sqlalchemy import func, select, tuple_
from werkzeug.exceptions import BadRequest, NotFound

from ..cache import ComputedCache
from ..db import db

ARGS = frozenset({"page", "per_page"})
# Up to this many rows an OFFSET scan is cheaper than computing page keys.
OFFSET_SCAN_MAX = 5000
# A filtered listing with at most this many matches is fetched whole and sorted (see
# ``PxCodeListing.statement``); its pages then never need keys.
FENCED_MAX = 20000


@dataclass(frozen=True)
class PageArgs:
    """The requested page and page size, validated and clamped."""

    page: int
    per_page: int

    @classmethod
    def from_request(cls):
        """Read ``page`` and ``per_page`` from the query string (400 naming the bad one)."""
        config = current_app.config
        page = _positive_int("page", 1)
        per_page = _positive_int("per_page", config["PAGE_SIZE_DEFAULT"])
        return cls(page=page, per_page=min(per_page, config["PAGE_SIZE_MAX"]))


def _positive_int(name, default):
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer, got {raw[:40]!r}") from None
    if value < 1:
        raise BadRequest(f"{name} must be 1 or more, got {value}")
    return value


@dataclass(frozen=True)
class Page:
    """One page of rows, with the numbers the ``meta`` block needs."""

    items: list
    page: int
    per_page: int
    total: int

    @property
    def pages(self):
        return math.ceil(self.total / self.per_page)

    @property
    def last(self):
        # An empty collection still has a (empty) first page.
        return max(self.pages, 1)


class Pager:
    """Pages of a listing (see ``queries.PxCodeListing``), with counts and page keys cached."""

    def __init__(self, maxsize=512):
        self._counts = ComputedCache(maxsize)
        self._page_keys = ComputedCache(max(maxsize // 16, 4))

    def paginate(self, listing, args, version):
        """Return page ``args.page`` of ``listing`` at data ``version``; 404 past the last page."""
        total = self._counts.get_or_compute((version, listing), lambda: _count(listing))
        empty = Page(items=[], page=args.page, per_page=args.per_page, total=total)
        if args.page > empty.last:
            raise NotFound(f"page {args.page} is past the last page ({empty.last})")
        fenced = listing.is_filtered and total <= FENCED_MAX
        statement = listing.statement(fenced=fenced).limit(args.per_page)
        offset = (args.page - 1) * args.per_page
        if fenced or offset <= OFFSET_SCAN_MAX:
            statement = statement.offset(offset)
        else:
            keys = self._page_keys.get_or_compute(
                (version, listing, args.per_page), lambda: _first_keys(listing, args.per_page)
            )
            first = tuple_(*listing.order_columns)
            bound = keys[args.page - 1]
            statement = statement.where(first <= bound if listing.descending else first >= bound)
        items = db.session.scalars(statement).all()
        return Page(items=items, page=args.page, per_page=args.per_page, total=total)

    def clear(self):
        self._counts.clear()
        self._page_keys.clear()


def _count(listing):
    return db.session.scalar(select(func.count()).select_from(listing.filtered().subquery()))


def _first_keys(listing, per_page):
    """Return the sort key of the first row of every page, in one ordered scan."""
    number = func.row_number().over(order_by=listing.order_by()).label("n")
    ranked = listing.filtered().with_only_columns(*listing.order_columns, number).subquery()
    keys = [ranked.c[column.key] for column in listing.order_columns]
    rows = db.session.execute(
        select(*keys).where((ranked.c.n - 1) % per_page == 0).order_by(ranked.c.n)
    )
    return [tuple(row) for row in rows]


def page_url(number, per_page):
    """Return this request's absolute URL for page ``number``, keeping every other argument."""
    base = url_for(request.endpoint, **(request.view_args or {}), _external=True)
    query = [(k, v) for k, v in request.args.items(multi=True) if k not in ARGS]
    query += [("per_page", per_page), ("page", number)]
    return f"{base}?{urlencode(query)}"


def page_meta(page):
    """Return the seed's ``meta`` block: page numbers and absolute links."""

    def link(number):
        return page_url(number, page.per_page)

    return {
        "page": page.page,
        "pages": page.pages,
        "per_page": page.per_page,
        "total": page.total,
        "first": link(1),
        "last": link(page.last),
        "prev": link(page.page - 1) if page.page > 1 else None,
        "next": link(page.page + 1) if page.page < page.last else None,
    }


def page_headers(meta):
    """Return the RFC 8288 ``Link`` header and ``X-Total-Count`` for a ``meta`` block."""
    links = [
        f'<{meta[rel]}>; rel="{rel}"' for rel in ("first", "prev", "next", "last") if meta[rel]
    ]
    return {"Link": ", ".join(links), "X-Total-Count": str(meta["total"])}


def page_body(page, serialize):
    """Return the seed's list body: ``items`` and ``meta``."""
    return {"items": [serialize(item) for item in page.items], "meta": page_meta(page)}
