"""Pagination as HTTP sees it: page arguments, a page's numbers, the seed's ``meta`` and a Link header.

How a page is fetched from the database is the listing's business (``queries.Pager``).
"""

import json
import math
from dataclasses import dataclass
from urllib.parse import urlencode

from flask import current_app, request, url_for
from werkzeug.exceptions import BadRequest

from .conditional import encode_json

ARGS = frozenset({"page", "per_page"})


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


def render_page(page, serialize):
    """Return the seed's list body (``items``, ``meta``) and its ``Link`` / ``X-Total-Count`` headers."""
    body = {"items": [serialize(item) for item in page.items], "meta": page_meta(page)}
    return body, page_headers(body["meta"])


def with_total(encoded, total, dumps):
    """A list answer's body (``conditional.encode_json``'s) as it reads with ``total`` rows in all, its own rows the
    same: ``(bytes, headers)``, the headers those that change with it (``Link``, ``X-Total-Count``).

    The links are this page's ``first`` with another number: ``page_url`` puts the page last.
    """
    body = json.loads(encoded)
    meta = body["meta"]
    first = meta["first"]
    if not first.endswith("page=1"):
        raise ValueError(f"not a first page's link: {first!r}")

    def link(number):
        return first[:-1] + str(number)

    page = Page(items=[], page=meta["page"], per_page=meta["per_page"], total=total)
    meta.update(
        total=total,
        pages=page.pages,
        last=link(page.last),
        next=link(page.page + 1) if page.page < page.last else None,
    )
    return encode_json(body, dumps), page_headers(meta)
