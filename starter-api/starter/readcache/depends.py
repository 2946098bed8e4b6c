"""What a filtered listing's answer depends on: the codes its filter matches, before or after a change."""

import threading
from dataclasses import dataclass

from cachetools import LRUCache

from .. import search


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


class ByTag:
    """What each recently rendered answer depends on, by its ETag: the answers a render cache or
    a 304 gives without rendering depend on the same rows (the tag names the version and URL)."""

    def __init__(self, maxsize=1024):
        self._depends = LRUCache(maxsize)
        self._lock = threading.Lock()

    def note(self, tag, depends_on):
        with self._lock:
            self._depends[tag] = depends_on

    def get(self, tag):
        """What the answer tagged ``tag`` depends on, or None (unknown: the whole table)."""
        with self._lock:
            return self._depends.get(tag)
