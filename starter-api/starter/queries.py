"""What the list endpoint selects (word search, code prefix, sort order) and how its pages are fetched.

Counting and deep pages must not grow with the table. Both are cached per data
version (any write changes the version, so a cached figure is never stale):
the total is counted once per version and listing, and a page deep in the
listing is fetched by its first key (keyset) instead of an OFFSET scan; the
first key of every page is computed once per version, listing and page size.

How words match and rank is ``starter.search``; a search that finds nothing is
tried once more with its misspelt words corrected (``starter.typos``).
"""

from dataclasses import dataclass, replace

from flask import request
from sqlalchemy import and_, func, select, true, tuple_
from sqlalchemy.orm import aliased
from werkzeug.exceptions import BadRequest, NotFound

from . import search
from .cache import ComputedCache
from .db import db
from .http.pagination import Page
from .models import PXCODE_MAX, PxCode, is_pxcode, is_storable_text
from .search import like_literal
from .typos import Corrector

SORT_FIELDS = {"pxcode": PxCode.pxcode, "procedure": PxCode.procedure}
RELEVANCE = "relevance"
SORT_CHOICES = (RELEVANCE, *(f"{sign}{name}" for name in SORT_FIELDS for sign in ("", "-")))
Q_MAX_LENGTH = 200
Q_MAX_WORDS = 10
# Up to this many rows an OFFSET scan is cheaper than computing page keys.
OFFSET_SCAN_MAX = 5000
# A filtered listing with at most this many matches is fetched whole and sorted (see
# ``PxCodeListing.statement``); its pages then never need keys.
SORT_MATCHES_MAX = 20000


@dataclass(frozen=True)
class PxCodeListing:
    """A filtered, ordered selection of codes; hashable, so it can key caches."""

    words: tuple = ()
    prefix: str = ""
    sort: str = "pxcode"
    fuzzy: bool = False  # the words are corrections of the ones asked for

    ARGS = frozenset({"q", "code", "sort"})

    @classmethod
    def from_request(cls):
        """Read ``q``, ``code`` and ``sort`` (400 naming the bad one)."""
        q = request.args.get("q", "")
        if len(q) > Q_MAX_LENGTH:
            raise BadRequest(f"q must be at most {Q_MAX_LENGTH} characters")
        if not is_storable_text(q):
            raise BadRequest("q must not contain control characters")
        # Matching ignores case; lower-casing merges repeated words.
        words = tuple(dict.fromkeys(word.lower() for word in q.split()))
        if len(words) > Q_MAX_WORDS:
            raise BadRequest(f"q must have at most {Q_MAX_WORDS} words")
        prefix = request.args.get("code", "")
        if prefix and not is_pxcode(prefix):
            raise BadRequest(
                f"code must be the start of a code: 1 to {PXCODE_MAX} letters, digits, '.' or '-'"
            )
        sort = request.args.get("sort", RELEVANCE if words else "pxcode")
        if sort not in SORT_CHOICES:
            raise BadRequest(f"sort must be one of {', '.join(SORT_CHOICES)}")
        if sort == RELEVANCE and not words:
            sort = "pxcode"  # without words every code ranks alike
        return cls(words=words, prefix=prefix, sort=sort)

    @property
    def order_columns(self):
        """The sort column, then the code as tie-breaker: a unique key in sort order.

        The relevance is an expression, labelled so that subqueries can name it.
        """
        if self.sort == RELEVANCE:
            return [search.relevance(self.words).label(RELEVANCE), PxCode.pxcode]
        column = SORT_FIELDS[self.sort.lstrip("-")]
        columns = [column] if column is PxCode.pxcode else [column, PxCode.pxcode]
        return columns

    @property
    def descending(self):
        return self.sort.startswith("-")

    def order_by(self):
        return [c.desc() if self.descending else c.asc() for c in self.order_columns]

    def where(self):
        """The filter: every word starts a title word or the code (``search.matches``), and the code prefix."""
        conditions = []
        if self.words:
            code_words = [w for w in self.words if search.starts_a_code(w)]
            indexed = db.engine.dialect.name == "postgresql"
            conditions.append(search.matches(self.words, indexed, code_words))
        if self.prefix:
            conditions.append(PxCode.pxcode.like(f"{like_literal(self.prefix)}%", escape="\\"))
        return and_(true(), *conditions)

    def meta(self):
        """What the page's ``meta`` tells of the search: the words searched, corrected or not."""
        return {"fuzzy": self.fuzzy, "words": list(self.words)} if self.words else {}

    @property
    def is_filtered(self):
        return bool(self.words or self.prefix)

    def filtered(self):
        """Select the matching codes, in no particular order."""
        return select(PxCode).where(self.where())

    def statement(self, sort_matches=False):
        """Select the matching codes in order.

        ``sort_matches``, for a filter that matches few rows: find the matches first
        (behind ``OFFSET 0``, by their own index) and sort just those. Otherwise
        PostgreSQL may walk the sort order's index and test row after row, which
        is far slower when the matches are few among many (bench/README.md).
        """
        if not sort_matches:
            return self.filtered().order_by(*self.order_by())
        computed = [c for c in self.order_columns if c.key not in PxCode.__table__.c]
        subquery = self.filtered().add_columns(*computed).offset(0).subquery()
        matches = aliased(PxCode, subquery)
        columns = [subquery.c[column.key] for column in self.order_columns]
        return select(matches).order_by(*[c.desc() if self.descending else c.asc() for c in columns])


class Pager:
    """Pages of a listing (see ``queries.PxCodeListing``), with counts and page keys cached."""

    def __init__(self, maxsize=512):
        self._counts = ComputedCache(maxsize)
        self._page_keys = ComputedCache(max(maxsize // 16, 4))
        self._corrector = Corrector(maxsize // 2)

    def _total(self, listing, version):
        return self._counts.get_or_compute((version, listing), lambda: _count(listing))

    def searched(self, listing, version):
        """Return ``listing``, or its twin with misspelt words corrected when only that one finds codes."""
        if not listing.words or self._total(listing, version):
            return listing
        words = self._corrector.corrected(listing.words, version)
        if words is None:
            return listing
        corrected = replace(listing, words=words, fuzzy=True)
        return corrected if self._total(corrected, version) else listing

    def paginate(self, listing, args, version):
        """Return page ``args.page`` of ``listing`` at data ``version``; 404 past the last page."""
        total = self._total(listing, version)
        empty = Page(items=[], page=args.page, per_page=args.per_page, total=total)
        if args.page > empty.last:
            raise NotFound(f"page {args.page} is past the last page ({empty.last})")
        sort_matches = listing.is_filtered and total <= SORT_MATCHES_MAX
        statement = listing.statement(sort_matches=sort_matches).limit(args.per_page)
        offset = (args.page - 1) * args.per_page
        if sort_matches or offset <= OFFSET_SCAN_MAX:
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
        self._corrector.clear()


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
