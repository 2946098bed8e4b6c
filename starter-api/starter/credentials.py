"""What an ``Authorization`` header says: the one parser of credentials, for every path.

Flask's authentication and the read cache both ask this module, so a header means the
same whether an answer is replayed or made. The scheme is case-insensitive (RFC 9110
section 11.1): ``bearer``, ``Bearer`` and ``BEARER`` are one scheme. Basic credentials are
base64 (strict) of UTF-8 ``user-id ":" password`` (RFC 7617); without the colon they are
malformed. A token travels as ``Bearer <token>`` or, the seed's contract, as the basic
user-id with an empty password.
"""

import base64
import binascii
import re
from dataclasses import dataclass

# RFC 9110 token68: what follows the scheme and one or more spaces.
TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


@dataclass(frozen=True)
class Password:
    username: str
    password: str


@dataclass(frozen=True)
class Token:
    token: str


def parse(header):
    """``Password``, ``Token``, or None for a missing, malformed or unsupported header."""
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    scheme, rest = scheme.lower(), rest.lstrip(" ")
    if not TOKEN68.fullmatch(rest):
        return None
    if scheme == "bearer":
        return Token(rest)
    if scheme != "basic":
        return None
    try:
        decoded = base64.b64decode(rest, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    username, colon, password = decoded.partition(":")
    if not colon or not username:
        return None
    return Password(username, password) if password else Token(username)


def is_bearer(header):
    """Whether the client used the Bearer scheme (it is answered with a Bearer challenge)."""
    return bool(header) and header.partition(" ")[0].lower() == "bearer"
