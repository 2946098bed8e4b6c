"""The tables: ``starter_users`` and ``starter_pxcodes``, with their serialization."""

import hashlib
import re

from flask import current_app, url_for
from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.security import check_password_hash, generate_password_hash

from .db import db

PXCODE_MAX = 10
# ICD-10-PCS titles reach 165 characters; leave room for longer code sets.
PROCEDURE_MAX = 255
# Letters, digits, '.' and '-': covers DRG, ICD-10-PCS and ICD-10-CM codes and
# keeps every code safe as a single URL path segment.
PXCODE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]*")
USERNAME_MAX = 64


class ValidationError(ValueError):
    """Input that does not describe a valid record; ``errors`` maps field to problem."""

    def __init__(self, errors):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))


class User(db.Model):
    __tablename__ = "starter_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_MAX), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))

    @property
    def password(self):
        raise AttributeError("password is not a readable attribute")

    @password.setter
    def password(self, password):
        method = current_app.config["PASSWORD_HASH_METHOD"]
        self.password_hash = generate_password_hash(password, method=method)

    def verify_password(self, password):
        """Return True when ``password`` is this user's (constant-time compare)."""
        return check_password_hash(self.password_hash, password)

    @property
    def credential_stamp(self):
        """A short digest that changes whenever the password does (binds tokens to it)."""
        return hashlib.sha256(self.password_hash.encode()).hexdigest()[:16]

    @classmethod
    def by_username(cls, username):
        return db.session.scalar(select(cls).filter_by(username=username))

    @staticmethod
    def validate_username(username):
        """Raise ``ValidationError`` unless ``username`` can be used in basic auth."""
        if not username or len(username) > USERNAME_MAX:
            raise ValidationError(
                {"username": f"must be 1 to {USERNAME_MAX} characters"}
            )
        if ":" in username or not username.isprintable() or username.strip() != username:
            raise ValidationError(
                {"username": "must be printable, without ':' or surrounding spaces"}
            )


class PxCode(db.Model):
    __tablename__ = "starter_pxcodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    pxcode: Mapped[str] = mapped_column(String(PXCODE_MAX), unique=True, index=True)
    procedure: Mapped[str] = mapped_column(String(PROCEDURE_MAX))

    @classmethod
    def ordered(cls):
        """Select every code in a stable order (by code)."""
        return select(cls).order_by(cls.pxcode)

    @classmethod
    def get_or_404(cls, pxcode):
        return db.one_or_404(
            select(cls).filter_by(pxcode=pxcode),
            description=f"pxcode {pxcode!r} not found",
        )

    @property
    def etag(self):
        """A strong validator computed from the stored fields (same in every process)."""
        digest = hashlib.md5(f"{self.pxcode}\x1f{self.procedure}".encode(), usedforsecurity=False)
        return digest.hexdigest()

    def to_dict(self):
        return {
            "url": url_for("api.get_pxcode", pxcode=self.pxcode, _external=True),
            "pxcode": self.pxcode,
            "procedure": self.procedure,
        }

    @classmethod
    def from_dict(cls, data):
        """Build a new code from request JSON, or raise ``ValidationError``."""
        errors = {}
        pxcode = data.get("pxcode")
        procedure = data.get("procedure")
        if not isinstance(pxcode, str):
            errors["pxcode"] = "required, a string"
        elif len(pxcode) > PXCODE_MAX or not PXCODE_PATTERN.fullmatch(pxcode):
            errors["pxcode"] = (
                f"1 to {PXCODE_MAX} letters, digits, '.' or '-', starting with a letter or digit"
            )
        if not isinstance(procedure, str) or not procedure.strip():
            errors["procedure"] = "required, a non-empty string"
        elif len(procedure) > PROCEDURE_MAX:
            errors["procedure"] = f"at most {PROCEDURE_MAX} characters"
        unknown = sorted(set(data) - {"pxcode", "procedure"})
        for field in unknown:
            errors[field] = "unknown field"
        if errors:
            raise ValidationError(errors)
        return cls(pxcode=pxcode, procedure=procedure.strip())
