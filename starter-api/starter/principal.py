"""Who the request is: the authenticated user as a snapshot, kept for the request.

Its own module so that whoever needs the caller (rate limits, views) does not import
the authentication that finds it.
"""

from dataclasses import dataclass

from flask import g

PASSWORD, TOKEN = "password", "token"


@dataclass(frozen=True)
class Principal:
    """A user as the request sees it (not a database row), and what proved it."""

    id: int
    username: str
    is_admin: bool
    credential_stamp: str
    proved_by: str  # PASSWORD or TOKEN

    @classmethod
    def of(cls, user, proved_by):
        return cls(user.id, user.username, user.is_admin, user.credential_stamp, proved_by)


def current():
    """This request's principal; None before authentication or without it."""
    return g.get("principal")


def set_current(principal):
    g.principal = principal
