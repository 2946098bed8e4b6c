"""How the words of ``q`` match a code and rank it: word prefixes in titles, code prefixes.

A word matches a code when a word of its title starts with it ("cardi" matches
CARDIAC, not PERICARDIAL) or the code itself does ("03" matches 039). Every
word of ``q`` must match. Ranks, best first: a word is the code, a word starts
the code, the title has the words in the order typed, the rest.

The SQL is the same on PostgreSQL and SQLite: ``LIKE`` finds candidates (on
PostgreSQL through the trigram and pattern indexes) and a regular expression
confirms the word start; the expression uses only syntax that PostgreSQL's and
Python's regular expressions (SQLite's REGEXP, from SQLAlchemy) read alike.
"""

import re

from sqlalchemy import and_, case, or_

from .models import PxCode

# What may stand before a word: the start of the title or a character that is no letter or digit.
WORD_START = "(^|[^A-Za-z0-9])"
EXACT_CODE, CODE_PREFIX, TITLE_IN_ORDER, TITLE_ANY_ORDER = range(4)


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


def matches(words):
    """Every word starts a word of the title or starts the code."""
    return and_(*(or_(_title_has_word_starting(w), _code_starts_with(w)) for w in words))


def relevance(words):
    """The rank of a matching code (``EXACT_CODE`` first); order by it, then by code."""
    exact = or_(*(PxCode.pxcode == w for word in words for w in _code_spellings(word)))
    in_order = ".*".join(WORD_START + _regex_literal(w) for w in words)
    return case(
        (exact, EXACT_CODE),
        (or_(*(_code_starts_with(w) for w in words)), CODE_PREFIX),
        (_title_matches(in_order), TITLE_IN_ORDER),
        else_=TITLE_ANY_ORDER,
    )
