"""How the words of ``q`` match a code and rank it: word prefixes in titles, code prefixes.

A word matches a code when a word of its title starts with it ("cardi" matches
CARDIAC, not PERICARDIAL) or the code itself does ("03" matches 039). Every
word of ``q`` must match; one of them may be the code's start. Ranks, best first: a word is the code, a word starts
the code, the title has the words in the order typed, the rest.

Words of letters and digits are looked up, on PostgreSQL, as prefixes of the
title's words in a full-text index (``TITLE_WORDS``, migration 0004: the
lower-cased title split at every character that is no letter or digit), which
finds the codes having all of them without reading any other row. Each such word is
first looked up in the table of the titles' distinct words (``starter_pxcode_words``,
the typo corrector's): the index is then asked for those whole words (``cardiac |
cardiology``), which it intersects by skipping through their lists, where a prefix
(``cardi:*``) makes it read every list of every word it starts in full; 2-5 times
faster at 1,000,000 codes (bench/README.md). Other words
("w/o", "4+"), and every word on SQLite, go through ``LIKE`` for candidates and a
regular expression for the word start, in syntax PostgreSQL's and Python's
regular expressions (SQLite's REGEXP, from SQLAlchemy) read alike; both ways
split words at the same characters, so both databases answer the same.
"""

import re
import threading
from dataclasses import dataclass
from functools import cached_property

from cachetools import LRUCache
from sqlalchemy import and_, case, column, exists, false, func, literal_column, or_, select, table, true

from .db import db
from .models import PxCode

# What may stand before a word: the start of the title or a character that is no letter or digit.
WORD_START = "(^|[^A-Za-z0-9])"
EXACT_CODE, CODE_PREFIX, TITLE_IN_ORDER, TITLE_ANY_ORDER = range(4)
# A word as the index splits titles; such a word needs no escaping in a tsquery.
INDEXED_WORD = re.compile(r"[a-z0-9]+")
# Exactly the expression of the index ix_starter_pxcodes_title_words (migration 0004).
TITLE_WORDS = literal_column(
    "to_tsvector('simple', regexp_replace(lower(starter_pxcodes.procedure), '[^a-z0-9]+', ' ', 'g'))"
)
# The titles' distinct words, in byte order (migration 0004): the same words as TITLE_WORDS's.
DISTINCT_WORDS = table("starter_pxcode_words", column("word"))
# A word that starts more title words than this is looked up as a prefix (``word:*``):
# so many lists are read whole either way, and the query stays short.
LISTED_MAX = 64


def like_literal(text):
    """Escape LIKE wildcards so user text matches literally (escape character ``\\``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _regex_literal(word):
    # re.escape backslashes every special character; PostgreSQL reads "\x" as x too.
    return re.escape(word)


def _title_matches(pattern):
    # "(?i)": case-insensitive in both PostgreSQL's and Python's syntax (SQLite ignores flags=).
    return PxCode.procedure.regexp_match("(?i)" + pattern)


def _code_spellings(word):
    # Codes are stored as written (mostly upper case); q is lower-cased. Plain LIKE keeps
    # the pattern index usable where ILIKE would scan.
    return dict.fromkeys((word.upper(), word))


def _code_starts_with(word):
    return or_(*(PxCode.pxcode.like(f"{like_literal(w)}%", escape="\\") for w in _code_spellings(word)))


def _title_has_word_starting(word):
    return and_(
        PxCode.procedure.ilike(f"%{like_literal(word)}%", escape="\\"),
        _title_matches(WORD_START + _regex_literal(word)),
    )


@dataclass(frozen=True)
class Terms:
    """What the database holds of a search's words, looked up before the search (``look_up``).

    ``code_words``: the words that start some code. ``title_words`` (PostgreSQL): for each
    word of letters and digits, the title words it starts, space-separated (up to
    ``LISTED_MAX`` + 1: more than ``LISTED_MAX`` are searched as a prefix); "" when none.
    """

    code_words: frozenset = frozenset()
    title_words: dict = None

    @property
    def indexed(self):
        return self.title_words is not None

    def finds_nothing(self, words):
        """Whether no code can match: a word starts neither a title word nor a code."""
        return self.indexed and any(self.title_words.get(w) == "" and w not in self.code_words for w in words)


def look_up(words, indexed):
    """Return the ``Terms`` of ``words``, in one statement (``indexed``: on PostgreSQL)."""
    columns = [exists().where(_code_starts_with(w)) for w in words]
    listed = [w for w in words if INDEXED_WORD.fullmatch(w)] if indexed else []
    columns += [_title_words_starting(w) for w in listed]
    row = db.session.execute(select(*columns)).one()
    return Terms(
        code_words=frozenset(w for w, starts in zip(words, row) if starts),
        title_words=dict(zip(listed, (found or "" for found in row[len(words) :]))) if indexed else None,
    )


@dataclass(frozen=True)
class WordFound:
    """What ``look_up`` found of one word: whether it starts a code, and the title words it starts
    (``Terms.title_words``' value; None: not looked up as a title word).

    It depends on few rows, so it can outlive writes (``touched_by``, as a read cache's
    ``depends_on``): only a change that may alter what a fresh look-up finds touches it. A code
    the word starts, created or deleted; a title word it starts that no title had (the word would
    miss that code) or that a title lost (maybe the last one: the word may now find nothing).
    Searched as a prefix (more than ``LISTED_MAX`` words), the title words it lists are not used.
    """

    word: str
    starts_a_code: bool
    title_words: str | None

    @cached_property
    def _listed(self):
        return frozenset(self.title_words.split()) if self.title_words is not None else frozenset()

    def touched_by(self, change):
        if (change.before is None or change.after is None) and _starts_the_code(self.word, change.pxcode):
            return True
        if self.title_words is None:
            return False
        listed = self._listed
        if len(listed) > LISTED_MAX:
            return False
        before, after = _title_words_of(change.before), _title_words_of(change.after)
        gained, lost = after - before, before - after
        return any(w.startswith(self.word) and w not in listed for w in gained) or any(
            w.startswith(self.word) for w in lost
        )


class KnownWords:
    """What ``look_up`` found of single words (bounded, least recently used out).

    The same words come back in search after search ("hip", "repl"): a search whose words
    were all looked up at its data version makes no look-up statement, and one with new
    words looks up only those. A word looked up at an earlier version is used at a later one
    only when ``still_current`` (a read cache's) says no change since touched it
    (``WordFound.touched_by``); without that, any write makes it looked up again.
    """

    def __init__(self, maxsize=4096):
        self._entries = LRUCache(maxsize)  # word -> (version, WordFound)
        self._lock = threading.Lock()

    def look_up(self, words, indexed, version, still_current=None):
        """Return the ``Terms`` of ``words`` at data ``version``, as ``look_up`` would.
        ``still_current(found, since)``: whether ``found``, made at version ``since``, holds at ``version``."""
        with self._lock:
            entries = {w: self._entries.get(w) for w in words}
        known = {}
        for w, entry in entries.items():
            if entry is not None:
                since, found = entry
                if since == version or (still_current is not None and still_current(found, since)):
                    known[w] = found
        missing = tuple(w for w in words if w not in known)
        if missing:
            found = look_up(missing, indexed)
            for w in missing:
                known[w] = WordFound(w, w in found.code_words, found.title_words.get(w) if indexed else None)
        moved = {w: (version, known[w]) for w in words if entries[w] is None or entries[w][0] != version}
        if moved:
            with self._lock:
                # Kept ones move up to this version: the next look at them walks fewer changes.
                self._entries.update(moved)
        return Terms(
            code_words=frozenset(w for w in words if known[w].starts_a_code),
            title_words={w: known[w].title_words for w in words if known[w].title_words is not None} if indexed else None,
        )

    def clear(self):
        with self._lock:
            self._entries.clear()


def _title_words_starting(word):
    # INDEXED_WORD: nothing to escape; byte order ("C" collation): LIKE walks the primary key.
    starting = (
        select(DISTINCT_WORDS.c.word)
        .where(DISTINCT_WORDS.c.word.like(f"{word}%"))
        .order_by(DISTINCT_WORDS.c.word)
        .limit(LISTED_MAX + 1)
        .subquery()
    )
    return select(func.string_agg(starting.c.word, " ")).scalar_subquery()


def _title_has_words_starting(words, terms):
    """All of ``words`` start words of the title (through ``TITLE_WORDS`` where ``terms`` has them)."""
    looked_up = [w for w in words if w in terms.title_words] if terms.indexed else []
    conditions = [_title_has_word_starting(w) for w in words if w not in looked_up]
    if any(terms.title_words[w] == "" for w in looked_up):
        return false()  # a word that starts no title word
    if looked_up:
        query = " & ".join(_tsquery_term(w, terms.title_words[w]) for w in looked_up)
        conditions.insert(0, TITLE_WORDS.op("@@")(func.to_tsquery("simple", query)))
    return and_(true(), *conditions)


def _tsquery_term(word, title_words):
    listed = title_words.split()
    return f"{word}:*" if len(listed) > LISTED_MAX else f"({' | '.join(listed)})"


def matches(words, terms):
    """Every word starts a word of the title; or one word starts the code and the others title words.

    ``terms``: what ``look_up`` found of the words. Only the words that start some code
    get the second alternative, whose test PostgreSQL would otherwise repeat on every
    row the first finds.
    """
    as_code = (
        and_(_code_starts_with(word), _title_has_words_starting(words[:i] + words[i + 1 :], terms))
        for i, word in enumerate(words)
        if word in terms.code_words
    )
    return or_(_title_has_words_starting(words, terms), *as_code)


def relevance(words):
    """The rank of a matching code (``EXACT_CODE`` first); order by it, then by code."""
    exact = or_(*(PxCode.pxcode == w for word in words for w in _code_spellings(word)))
    code_prefix = or_(*(_code_starts_with(w) for w in words))
    if len(words) == 1:  # one word is always in order: no expression to test on every row
        return case((exact, EXACT_CODE), (code_prefix, CODE_PREFIX), else_=TITLE_IN_ORDER)
    in_order = ".*".join(WORD_START + _regex_literal(w) for w in words)
    return case(
        (exact, EXACT_CODE),
        (code_prefix, CODE_PREFIX),
        (_title_matches(in_order), TITLE_IN_ORDER),
        else_=TITLE_ANY_ORDER,
    )


# --- the same test in Python, on one row: which cached listings a change can touch ---

_WORD_STARTS = "(?i)" + WORD_START


def _starts_a_title_word(word, title):
    # Both of the database's ways (the regular expression, and the index's words), so no row
    # either finds is missed.
    return re.search(_WORD_STARTS + re.escape(word), title) is not None or any(
        token.startswith(word) for token in _title_words_of(title)
    )


def _title_words_of(title):
    """The words the index and the distinct-words table hold of ``title`` (the title lower-cased and
    split at every character that is no a-z or 0-9), lower-cased both as Python does and, as
    PostgreSQL does under the "C" collation, by ASCII letters alone: a set that has both."""
    if title is None:
        return set()
    return {w for text in (title.lower(), title.translate(_ASCII_LOWER)) for w in _NOT_A_WORD.split(text) if w}


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NOT_A_WORD = re.compile("[^a-z0-9]+")


def _starts_the_code(word, pxcode):
    return any(pxcode.startswith(w) for w in _code_spellings(word)) or pxcode.lower().startswith(word)


def may_match(words, pxcode, title):
    """Whether ``matches(words, ...)`` may hold for the row (``pxcode``, ``title``): True for every
    row the database would find (and, with unusual letters, a few more), whatever ``terms``."""
    if all(_starts_a_title_word(w, title) for w in words):
        return True
    return any(
        _starts_the_code(word, pxcode) and all(_starts_a_title_word(w, title) for w in words if w != word)
        for word in words
    )
