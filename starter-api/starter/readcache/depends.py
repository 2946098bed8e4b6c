"""What a listing's answer depends on: the codes a filter matches, before or after a change
(``Matching``); a page of the unfiltered listing, its rows' keys and the total (``Window``)."""

import threading
from dataclasses import dataclass, replace

from cachetools import LRUCache
from werkzeug.http import quote_etag

from .. import search
from ..http.conditional import etag_of
from ..http.pagination import with_total


@dataclass(frozen=True)
class Matching:
    """The codes a listing's ``q`` words and ``code`` prefix select (``queries.PxCodeListing``)."""

    words: tuple
    prefix: str

    def touched_by(self, change):
        """Whether ``change`` (a ``changelog.Change``) may add a code to the listing, take one
        from it or change one in it: its row before or after matches the filter."""
        return any(
            title is not None and self._selects(change.pxcode, title) for title in (change.before, change.after)
        )

    def _selects(self, pxcode, title):
        # The prefix is compared as PostgreSQL's LIKE does (case-sensitive), and without case too:
        # a code matched by mistake only costs a flush.
        prefix = self.prefix
        if prefix and not (pxcode.startswith(prefix) or pxcode.lower().startswith(prefix.lower())):
            return False
        return not self.words or search.may_match(self.words, pxcode, title)


@dataclass(frozen=True)
class Window:
    """A page of the unfiltered listing (``sort`` by code or title): the rows between two sort keys,
    and the total its ``meta`` shows.

    A change can leave its rows as they were and alter only the total: a code created or
    deleted after the page, in the page's order. The keys are compared as Python compares them,
    which is the database's order only where it sorts by code point (``byte_order``: the version
    watch asks the database, and never uses a window otherwise).
    """

    by_title: bool  # sorted by (title, code), else by code
    descending: bool
    low: tuple | None  # the smallest and largest key shown, in ascending order; None: no rows
    high: tuple | None
    open_end: bool  # fewer rows than a page: a key past its end (in its order) joins it
    total: int
    url: str  # what its ETag digests, with the version

    byte_order = True  # valid only where the database orders its keys by code point

    @classmethod
    def of(cls, codes, by_title, descending, per_page, total, url):
        """The window of ``codes`` (the page's rows, as shown)."""
        keys = sorted(cls._key_of(by_title, code.pxcode, code.procedure) for code in codes)
        return cls(
            by_title, descending, keys[0] if keys else None, keys[-1] if keys else None,
            len(keys) < per_page, total, url,
        )

    @staticmethod
    def _key_of(by_title, pxcode, title):
        return (title, pxcode) if by_title else (pxcode,)

    def touched_by(self, change):
        """Whether ``change`` alters, adds, removes or shifts a row of the page (a code created
        or deleted before it shifts it; a title moved from before the page to after it too)."""
        if self.low is None:
            return True
        sides = {
            self._side(self._key_of(self.by_title, change.pxcode, title))
            for title in (change.before, change.after)
            if title is not None
        }
        if 0 in sides:
            return True
        if change.before is None or change.after is None:
            return -1 in sides  # created or deleted: before the page, it shifts its rows
        return len(sides) == 2  # moved across the page

    def _side(self, key):
        """-1 before the page (in its order), 0 on it, 1 after it."""
        if key < self.low:
            side = -1
        elif key > self.high:
            side = 1
        else:
            return 0
        side = -side if self.descending else side
        return 0 if side == 1 and self.open_end else side

    def with_total(self, body, total, version, dumps):
        """The page's answer at data ``version`` with ``total`` codes, its rows the same:
        ``(window, body, headers)``, the headers those that change (``ETag``, and with a body,
        ``http.pagination.with_total``'s); ``body`` None (a 304's) stays None."""
        headers = {}
        if body is not None:
            body, headers = with_total(body, total, dumps)
        headers["ETag"] = quote_etag(etag_of(version, self.url))
        return replace(self, total=total), body, headers


class ByTag:
    """What each recently rendered answer depends on, by its ETag: the answers a render cache or
    a 304 gives without rendering depend on the same rows (the tag names the version and URL)."""

    def __init__(self, maxsize=1024):
        self._depends = LRUCache(maxsize)
        self._lock = threading.Lock()

    def note(self, tag, version, depends_on):
        with self._lock:
            self._depends[tag] = (version, depends_on)

    def get(self, tag):
        """What the answer tagged ``tag`` depends on, or None (unknown: the whole table)."""
        made = self.made(tag)
        return None if made is None else made[1]

    def made(self, tag):
        """``(version, depends_on)`` of the answer tagged ``tag``: where it was made, and of what; or None."""
        with self._lock:
            return self._depends.get(tag)
