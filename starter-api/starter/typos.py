"""Typo tolerance: a search word that starts no title word is replaced by the nearest title word.

The candidates are the title words most like it by pg_trgm's similarity (the
share of three-letter groups two words have in common, at least pg_trgm's
default threshold); of those, the fewest edits away wins (letters added, dropped,
changed or swapped: "cardaic" is one swap from "cardiac"), then the most similar,
then the most used. Similarity alone would prefer short words ("card").

On PostgreSQL the title words are the table ``starter_pxcode_words`` (migration
0004, kept by triggers on every write) searched through its trigram index.
SQLite has no pg_trgm: there the words are read from the titles once per data
version and compared in process by the same measure, so both databases correct alike.
"""

import re
from bisect import bisect_left
from collections import Counter

from sqlalchemy import text

from .cache import ComputedCache
from .db import db

TITLE_WORD = re.compile(r"[a-z0-9]+")
# Only words of letters, long enough for a typo to be told from another word.
CORRECTABLE = re.compile(r"[a-z]{3,}")
MIN_SIMILARITY = 0.3  # pg_trgm.similarity_threshold's default, which the % operator uses
CANDIDATES = 20


def max_edits(word):
    """How many edits a correction may be away: more for longer words."""
    return len(word) // 4 + 1


def edits(a, b):
    """Letters added, dropped, changed or swapped with a neighbour to turn ``a`` into ``b``
    (optimal string alignment distance)."""
    previous2, previous = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            cost = ca != cb
            best = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                best = min(best, previous2[j - 2] + 1)
            current.append(best)
        previous2, previous = previous, current
    return previous[-1]


def nearest(word, candidates):
    """The best of ``candidates`` (``(word, similarity, uses)``) for ``word``, or None."""
    scored = [(edits(word, w), -sim, -uses, w) for w, sim, uses in candidates]
    best = min((s for s in scored if s[0] <= max_edits(word)), default=None)
    return best[3] if best is not None else None


def trigrams(word):
    """pg_trgm's trigrams of one lower-case word: padded with two spaces before, one after."""
    padded = f"  {word} "
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


def similarity(a, b):
    """pg_trgm's ``similarity`` of two words: shared trigrams over all trigrams."""
    ta, tb = trigrams(a), trigrams(b)
    return len(ta & tb) / len(ta | tb)


class Corrector:
    """Corrections of search words, per data version (cached: the same words correct alike)."""

    def __init__(self, maxsize=256):
        self._corrections = ComputedCache(maxsize)
        self._vocabularies = ComputedCache(2)  # SQLite only: the titles' words

    def corrected(self, words, version, starting=None):
        """Return ``words`` with each correctable one that starts no title word replaced
        by the nearest title word, or None when none was replaced.

        ``starting`` (PostgreSQL, optional): the title words each word starts, as
        ``search.Terms.title_words`` holds them ("" for none), known without a query."""
        return self._corrections.get_or_compute(
            (version, words), lambda: self._correct(words, version, starting or {})
        )

    def _correct(self, words, version, starting):
        if db.engine.dialect.name == "postgresql":
            vocabulary = _TableVocabulary(starting)
        else:
            vocabulary = self._vocabularies.get_or_compute(version, _TitleVocabulary.read)
        changed = False
        result = []
        for word in words:
            if CORRECTABLE.fullmatch(word) and not vocabulary.starts_a_word(word):
                correction = nearest(word, vocabulary.similar(word))
            else:
                correction = None
            result.append(correction or word)
            changed = changed or correction is not None
        return tuple(dict.fromkeys(result)) if changed else None

    def clear(self):
        self._corrections.clear()
        self._vocabularies.clear()


class _TableVocabulary:
    """``starter_pxcode_words`` on PostgreSQL: a prefix through its primary key, nearness through pg_trgm."""

    def __init__(self, starting):
        self._starting = starting

    def starts_a_word(self, word):
        if word in self._starting:
            return self._starting[word] != ""
        return db.session.scalar(
            # Only letters (CORRECTABLE): nothing to escape in the pattern.
            text("SELECT EXISTS (SELECT 1 FROM starter_pxcode_words WHERE word LIKE :w || '%')"),
            {"w": word},
        )

    def similar(self, word):
        return db.session.execute(
            text(
                "SELECT word, similarity(word, :w) AS s, uses FROM starter_pxcode_words"
                " WHERE word % :w AND similarity(word, :w) >= :least"
                " ORDER BY s DESC, uses DESC, word LIMIT :n"
            ),
            {"w": word, "least": MIN_SIMILARITY, "n": CANDIDATES},
        ).all()


class _TitleVocabulary:
    """Every word of every title with the number of its uses, in memory (SQLite)."""

    def __init__(self, counts):
        self._counts = counts
        self._sorted = sorted(counts)

    @classmethod
    def read(cls):
        counts = Counter()
        for (title,) in db.session.execute(text("SELECT procedure FROM starter_pxcodes")):
            counts.update(TITLE_WORD.findall(title.lower()))
        return cls(counts)

    def starts_a_word(self, word):
        i = bisect_left(self._sorted, word)
        return i < len(self._sorted) and self._sorted[i].startswith(word)

    def similar(self, word):
        scored = sorted((-similarity(word, w), -uses, w) for w, uses in self._counts.items())
        return [(w, -s, -u) for s, u, w in scored[:CANDIDATES] if -s >= MIN_SIMILARITY]
