"""Pagination: page arguments, the page of rows, and the seed's ``meta`` block."""

import math
from dataclasses import dataclass
from urllib.parse import urlencode

from flask import current_app, request, url_for
from sqlalchemy import func, select
from werkzeug.exceptions import BadRequest, NotFound

from ..db import db


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


def paginate(statement, args):
    """Run ``statement`` for the page in ``args``; 404 past the last page.

    The count runs first so a page far past the end costs no row query (and
    no offset overflow) before it is refused.
    """
    total = db.session.scalar(select(func.count()).select_from(statement.order_by(None).subquery()))
    page = Page(items=[], page=args.page, per_page=args.per_page, total=total)
    if args.page > page.last:
        raise NotFound(f"page {args.page} is past the last page ({page.last})")
    offset = (args.page - 1) * args.per_page
    items = db.session.scalars(statement.limit(args.per_page).offset(offset)).all()
    return Page(items=items, page=args.page, per_page=args.per_page, total=total)


def page_url(number, per_page):
    """Return this request's absolute URL for page ``number``, keeping every other argument."""
    base = url_for(request.endpoint, **(request.view_args or {}), _external=True)
    query = [(k, v) for k, v in request.args.items(multi=True) if k not in ("page", "per_page")]
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


def page_body(page, serialize):
    """Return the seed's list body: ``items`` and ``meta``."""
    return {"items": [serialize(item) for item in page.items], "meta": page_meta(page)}
