"""What the list endpoint selects (word search, code prefix, sort order) and how its pages are fetched.

Counting and deep pages must not grow with the table. The unfiltered listing
needs neither: its total is the count the triggers keep (read with the version),
and a page deep in it starts from an anchor kept across writes (``pagekeys``),
or is counted from the nearer end. A filtered listing's total is counted once per
data version and listing (any write changes the version, so a cached figure is
never stale), and a page deep in it is fetched by its first key (keyset), the
first key of every page computed once per version, listing and page size.

How words match and rank is ``starter.search``; a search that finds nothing is
tried once more with its misspelt words corrected (``starter.typos``).
"""

from dataclasses import dataclass, field, replace
from functools import cached_property, partial

from flask import request
from sqlalchemy import and_, func, select, true, tuple_
from werkzeug.exceptions import BadRequest, NotFound

from . import search
from .cache import ComputedCache
from .db import db
from .http.pagination import Page
from .models import PXCODE_MAX, DataVersion, PxCode, is_pxcode, is_storable_text
from .pagekeys import Anchors
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
TOTAL = "total"  # the label of the matches' count in a counted statement
# What a listing's page holds of each code: plain rows, which cost a fraction of ORM objects to load.
ROW = (PxCode.pxcode, PxCode.procedure)


@dataclass(frozen=True)
class PxCodeListing:
    """A filtered, ordered selection of codes; hashable, so it can key caches."""

    words: tuple = ()
    prefix: str = ""
    sort: str = "pxcode"
    fuzzy: bool = False  # the words are corrections of the ones asked for
    # How ``terms`` are found: ``search.look_up``, or a cache's (``Pager``); no part of what is listed.
    look_up: object = field(default=search.look_up, compare=False, repr=False)

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

    @cached_property
    def order_columns(self):
        """The sort column, then the code as tie-breaker: a unique key in sort order.

        The relevance is an expression, labelled so that subqueries can name it; built
        once per listing (a statement names these columns more than once).
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

    @cached_property
    def terms(self):
        """What the database holds of the words (``search.look_up``), looked up once per listing."""
        return self.look_up(self.words, indexed=db.engine.dialect.name == "postgresql")

    @property
    def finds_nothing(self):
        """Known without a search: a word starts neither a title word nor a code."""
        return bool(self.words) and self.terms.finds_nothing(self.words)

    def where(self):
        """The filter: every word starts a title word or the code (``search.matches``), and the code prefix."""
        conditions = []
        if self.words:
            conditions.append(search.matches(self.words, self.terms))
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
        """Select the matching codes (``ROW``: rows, not ORM objects), in no particular order."""
        return select(*ROW).where(self.where())

    def statement(self, sort_matches=False, counted=False):
        """Select the matching codes in order.

        ``sort_matches``, for a filter that matches few rows: find the matches first
        (behind ``OFFSET 0``, by their own index) and sort just those. Otherwise
        PostgreSQL may walk the sort order's index and test row after row, which
        is far slower when the matches are few among many (bench/README.md).
        ``counted`` (with ``sort_matches``): each row also has the number of matches
        (``count(*) OVER ()``), so one pass over them gives the page and the total.
        """
        if not sort_matches:
            return self.filtered().order_by(*self.order_by())
        computed = [c for c in self.order_columns if c.key not in PxCode.__table__.c]
        if counted:
            computed.append(func.count().over().label(TOTAL))
        subquery = self.filtered().add_columns(*computed).offset(0).subquery()
        columns = [subquery.c[column.key] for column in self.order_columns]
        ordered = select(*(subquery.c[c.key] for c in ROW))
        ordered = ordered.order_by(*[c.desc() if self.descending else c.asc() for c in columns])
        return ordered.add_columns(subquery.c[TOTAL]) if counted else ordered


class Pager:
    """Pages of a listing (see ``queries.PxCodeListing``), with counts and page keys cached."""

    def __init__(self, maxsize=512, still_current=None):
        # still_current(depends_on, since, versions): a read cache's (``readcache.still_current``),
        # which lets what was looked up at one version serve later ones that left it as it was.
        self._still_current = still_current
        self._counts = ComputedCache(maxsize)
        self._page_keys = ComputedCache(max(maxsize // 16, 4))
        self._anchors = Anchors()
        self._corrector = Corrector(maxsize // 2)
        self._words = search.KnownWords()

    def _total(self, listing, version):
        versions = DataVersion.current()
        if not listing.is_filtered and versions.codes == version:
            return versions.count  # kept by the triggers, read with the version: no count
        return self._counts.get_or_compute((version, listing), lambda: _count(listing))

    def search(self, listing, args, version):
        """Return ``(listing, page)``: page ``args.page`` of ``listing`` at data ``version``, or
        of its twin with misspelt words corrected when only that one finds codes; 404 past
        the last page."""
        kept, versions = None, DataVersion.current()
        if self._still_current is not None and versions.codes == version:
            kept = partial(self._still_current, versions=versions)
        listing = replace(listing, look_up=partial(self._words.look_up, version=version, still_current=kept))
        total, items = self._first_look(listing, args, version)
        if listing.words and not total:
            words = self._corrector.corrected(listing.words, version, listing.terms.title_words)
            if words is not None:
                corrected = replace(listing, words=words, fuzzy=True)
                found = self._first_look(corrected, args, version)
                if found[0]:
                    listing, (total, items) = corrected, found
        empty = Page(items=[], page=args.page, per_page=args.per_page, total=total)
        if args.page > empty.last:
            raise NotFound(f"page {args.page} is past the last page ({empty.last})")
        if items is None:
            items = self._items(listing, args, version, total)
        return listing, Page(items=items, page=args.page, per_page=args.per_page, total=total)

    def _first_look(self, listing, args, version):
        """Return ``(total, items or None)``: the total, and the page when finding it cost nothing more.

        A ranked search not counted yet is counted and paged in one pass over its
        matches (``statement(counted=True)``): the matches would be read anyway to rank
        them. A search with a word that starts nothing is not run at all.
        """
        offset = (args.page - 1) * args.per_page
        if not (listing.words and listing.sort == RELEVANCE and offset <= OFFSET_SCAN_MAX):
            return self._total(listing, version), None
        page = {}

        def count_and_page():
            if listing.finds_nothing:
                page["items"] = []
                return 0
            statement = listing.statement(sort_matches=True, counted=True)
            rows = db.session.execute(statement.limit(args.per_page).offset(offset)).all()
            if not rows and offset:  # past the last page: no row to carry the count
                return _count(listing)
            page["items"] = rows
            return getattr(rows[0], TOTAL) if rows else 0

        # Another thread on the same search: its total, and this page fetched after it.
        total = self._counts.get_or_compute((version, listing), count_and_page)
        return total, page.get("items")

    def _items(self, listing, args, version, total):
        """Fetch the page's codes, the total known: by OFFSET, or from its first key deep in a long listing."""
        if not listing.is_filtered:
            return self._unfiltered_items(listing, args, version, total)
        sort_matches = total <= SORT_MATCHES_MAX
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
        return db.session.execute(statement).all()

    def _unfiltered_items(self, listing, args, version, total):
        """A page of every code: by OFFSET near either end, else from the anchors (``pagekeys``).

        A descending page is the ascending rows counted from the end, reversed.
        """
        offset = (args.page - 1) * args.per_page
        if listing.descending:
            start = max(total - offset - args.per_page, 0)
        else:
            start = offset
        limit = max(min(offset + args.per_page, total) - offset, 0)
        order = listing.sort.lstrip("-")
        columns = listing.order_columns
        statement = select(PxCode).limit(limit)
        if start <= OFFSET_SCAN_MAX:
            rows = db.session.scalars(statement.order_by(*columns).offset(start)).all()
        elif total - start - limit <= OFFSET_SCAN_MAX:  # near the end: from the end
            descending = statement.order_by(*[c.desc() for c in columns])
            rows = db.session.scalars(descending.offset(total - start - limit)).all()[::-1]
        else:
            self._anchors.prepare(order)  # a build the next deep pages need not wait for
            rows = self._anchors.rows(order, start, limit, version)
        return rows[::-1] if listing.descending else rows

    def close(self):
        self._anchors.close()

    def clear(self):
        self._counts.clear()
        self._page_keys.clear()
        self._anchors.clear()
        self._corrector.clear()
        self._words.clear()


def _count(listing):
    if listing.finds_nothing:
        return 0
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
