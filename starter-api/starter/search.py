"""How the words of ``q`` match a code and rank it: word prefixes in titles, code prefixes.

A word matches a code when a word of its title starts with it ("cardi" matches
CARDIAC, not PERICARDIAL) or the code itself does ("03" matches 039). Every
word of ``q`` must match; one of them may be the code's start. Ranks, best first: a word is the code, a word starts
the code, the title has the words in the order typed, the rest.

Words of letters and digits are looked up, on PostgreSQL, as prefixes of the
title's words in a full-text index (``TITLE_WORDS``, migration 0004: the
lower-cased title split at every character that is no letter or digit), which
finds the codes having all of them without reading any other row. Other words
("w/o", "4+"), and every word on SQLite, go through ``LIKE`` for candidates and a
regular expression for the word start, in syntax PostgreSQL's and Python's
regular expressions (SQLite's REGEXP, from SQLAlchemy) read alike; both ways
split words at the same characters, so both databases answer the same.
"""

import re

from sqlalchemy import and_, case, exists, func, literal_column, or_, select, true

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


def _title_has_words_starting(words, indexed):
    """All of ``words`` start words of the title (``indexed``: through ``TITLE_WORDS``)."""
    looked_up = [w for w in words if INDEXED_WORD.fullmatch(w)] if indexed else []
    conditions = [_title_has_word_starting(w) for w in words if w not in looked_up]
    if looked_up:
        query = " & ".join(f"{w}:*" for w in looked_up)
        conditions.insert(0, TITLE_WORDS.op("@@")(func.to_tsquery("simple", query)))
    return and_(true(), *conditions)


def starts_a_code(word):
    """Whether some code starts with ``word`` (a probe of the code index)."""
    return db.session.scalar(select(exists().where(_code_starts_with(word))))


def matches(words, indexed=False, code_words=()):
    """Every word starts a word of the title; or one word starts the code and the others title words.

    ``indexed``: on PostgreSQL, where the titles' words have their index. ``code_words``:
    the words that start some code (``starts_a_code``); only those get the second
    alternative, whose test PostgreSQL would otherwise repeat on every row the first finds.
    """
    as_code = (
        and_(_code_starts_with(word), _title_has_words_starting(words[:i] + words[i + 1 :], indexed))
        for i, word in enumerate(words)
        if word in code_words
    )
    return or_(_title_has_words_starting(words, indexed), *as_code)


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
