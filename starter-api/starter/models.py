"""The tables: ``starter_users`` and ``starter_pxcodes``, with their serialization."""

import hashlib
import re
from dataclasses import dataclass
from urllib.parse import quote

from flask import current_app, g, url_for
from sqlalchemy import BigInteger, Index, String, false, select
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.exceptions import NotFound
from werkzeug.security import check_password_hash, generate_password_hash

from .db import db

PXCODE_MAX = 10
# ICD-10-PCS titles reach 165 characters; leave room for longer code sets.
PROCEDURE_MAX = 255
# Letters, digits, '.' and '-': covers DRG, ICD-10-PCS and ICD-10-CM codes and
# keeps every code safe as a single URL path segment.
PXCODE_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]*")
PXCODE_RULE = f"1 to {PXCODE_MAX} letters, digits, '.' or '-', starting with a letter or digit"
USERNAME_MAX = 64
# C0/C1 control characters (NUL among them) and lone surrogates: text no database stores.
UNSTORABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def is_pxcode(text):
    """Return True if ``text`` can be a code (``PXCODE_RULE``)."""
    return len(text) <= PXCODE_MAX and PXCODE_PATTERN.fullmatch(text) is not None


def is_storable_text(text):
    """Return True if ``text`` has no control characters or lone surrogates."""
    return UNSTORABLE.search(text) is None


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
    # Admins may write codes; everyone authenticated may read them.
    is_admin: Mapped[bool] = mapped_column(default=False, server_default=false())

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
        """Return the user named ``username``, or None (also for names no user can have)."""
        if len(username) > USERNAME_MAX or not is_storable_text(username):
            return None
        return db.session.scalar(select(cls).filter_by(username=username))

    @staticmethod
    def validate_username(username):
        """Raise ``ValidationError`` unless ``username`` can be used in basic auth."""
        if not username or len(username) > USERNAME_MAX:
            raise ValidationError(
                {"username": f"must be 1 to {USERNAME_MAX} characters"}
            )
        if ":" in username or not is_storable_text(username) or username.strip() != username:
            raise ValidationError(
                {"username": "must be text without ':', control characters or surrounding spaces"}
            )


class PxCode(db.Model):
    __tablename__ = "starter_pxcodes"
    __table_args__ = (
        # Sorting by title, with the code as tie-breaker (also the keyset for deep pages).
        Index("ix_starter_pxcodes_procedure_pxcode", "procedure", "pxcode"),
        # Code-prefix search (LIKE 'abc%') whatever the database's collation.
        Index(
            "ix_starter_pxcodes_pxcode_pattern",
            "pxcode",
            postgresql_ops={"pxcode": "varchar_pattern_ops"},
        ).ddl_if(dialect="postgresql"),
        # Word search (ILIKE '%word%') through trigrams.
        Index(
            "ix_starter_pxcodes_procedure_trgm",
            "procedure",
            postgresql_using="gin",
            postgresql_ops={"procedure": "gin_trgm_ops"},
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pxcode: Mapped[str] = mapped_column(String(PXCODE_MAX), unique=True, index=True)
    procedure: Mapped[str] = mapped_column(String(PROCEDURE_MAX))

    @classmethod
    def get_or_404(cls, pxcode):
        # A string that cannot be a code is not looked up (and NUL never reaches the database).
        if not is_pxcode(pxcode):
            raise NotFound(f"pxcode {pxcode[:40]!r} not found")
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

    @staticmethod
    def serializer():
        """Return a ``to_dict`` for many codes: the URL is built once, not once per item."""
        marker = "__pxcode__"
        template = url_for("api.get_pxcode", pxcode=marker, _external=True)
        prefix = template[: -len(marker)]

        def to_dict(code):
            url = prefix + quote(code.pxcode, safe="")
            return {"url": url, "pxcode": code.pxcode, "procedure": code.procedure}

        return to_dict

    @staticmethod
    def _check_fields(data, required):
        """Raise ``ValidationError`` for unknown fields and bad or missing values."""
        errors = {field: "unknown field" for field in sorted(set(data) - {"pxcode", "procedure"})}
        if "pxcode" in data or "pxcode" in required:
            pxcode = data.get("pxcode")
            if not isinstance(pxcode, str):
                errors["pxcode"] = "required, a string"
            elif not is_pxcode(pxcode):
                errors["pxcode"] = PXCODE_RULE
        if "procedure" in data or "procedure" in required:
            procedure = data.get("procedure")
            if not isinstance(procedure, str) or not procedure.strip():
                errors["procedure"] = "required, a non-empty string"
            elif not is_storable_text(procedure):
                errors["procedure"] = "must be text without control characters"
            elif len(procedure) > PROCEDURE_MAX:
                errors["procedure"] = f"at most {PROCEDURE_MAX} characters"
        if errors:
            raise ValidationError(errors)

    @classmethod
    def from_dict(cls, data):
        """Build a new code from request JSON, or raise ``ValidationError``."""
        cls._check_fields(data, required={"pxcode", "procedure"})
        return cls(pxcode=data["pxcode"], procedure=data["procedure"].strip())

    def changes_from(self, data, partial):
        """Return the column changes request JSON asks for (PUT: whole, PATCH: partial)."""
        self._check_fields(data, required=set() if partial else {"procedure"})
        if data.get("pxcode", self.pxcode) != self.pxcode:
            raise ValidationError({"pxcode": "cannot change: it names this item"})
        if not data:
            raise ValidationError({"procedure": "nothing to change"})
        return {"procedure": data["procedure"].strip()} if "procedure" in data else {}


class DataVersion(db.Model):
    """One row of versions that database triggers bump on every change.

    ``version`` counts changes to the codes, ``users_version`` changes to the
    users. Triggers make writes from anywhere count, the seed's ``psql``
    import included. ``epoch`` is new each time the table is created, so the
    versions of a dropped and recreated table never repeat.
    """

    __tablename__ = "starter_data_version"

    id: Mapped[int] = mapped_column(primary_key=True)
    epoch: Mapped[str] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(BigInteger)
    users_version: Mapped[int] = mapped_column(BigInteger)
    # How many codes there are, kept by the same triggers (migration 0005): no count(*).
    codes: Mapped[int] = mapped_column(BigInteger, server_default="0")

    @classmethod
    def current(cls):
        """Return this request's ``Versions``, read once, in one primary-key lookup."""
        if "data_versions" not in g:
            row = db.session.execute(cls.select_current()).one()
            g.data_versions = Versions.of(*row)
        return g.data_versions

    @classmethod
    def select_current(cls):
        """The one-row query of the versions and the count (the request path and the version watch)."""
        return select(cls.epoch, cls.version, cls.users_version, cls.codes).filter_by(id=1)


@dataclass(frozen=True)
class Versions:
    """The data versions as tags: the epoch keeps them unique across a recreated table.

    ``count``: how many codes there are at version ``codes`` (read in the same row).
    """

    codes: str
    users: str
    count: int = 0

    @classmethod
    def of(cls, epoch, codes_version, users_version, count=0):
        return cls(codes=f"{epoch}.{codes_version}", users=f"{epoch}.{users_version}", count=count)


def split_tag(tag):
    """``(epoch, version number)`` of a version tag such as ``Versions.codes``."""
    epoch, _, number = tag.rpartition(".")
    return epoch, int(number)
