"""Query-string arguments: an endpoint names the ones it takes; others are a 400."""

from flask import request
from werkzeug.exceptions import BadRequest


def reject_unknown_args(allowed):
    """Raise 400 naming the first query argument not in ``allowed``."""
    for name in request.args:
        if name not in allowed:
            accepted = ", ".join(sorted(allowed)) or "none"
            raise BadRequest(f"unknown query parameter {name[:40]!r} (accepted: {accepted})")
