"""Bulk import of procedure codes from TSV or CSV files (``manage.py import-pxcodes``).

Two steps, each usable on its own:

* ``parse_file(path)`` reads and validates the whole file and returns its rows,
  or raises ``ImportFileError`` naming the bad lines (nothing is written then);
* ``load_rows(rows, replace=...)`` writes them in ONE transaction and returns the
  counts (inserted / updated / unchanged / deleted).

File format: UTF-8 (a BOM is allowed), one code per line, two columns
``code, procedure``. The delimiter is a tab for ``.tsv``/``.tab`` files, a comma for
``.csv`` files, and for any other name a tab when the first non-blank line holds
one, else a comma. TSV is plain (no quoting, backslashes are literal); CSV follows
RFC 4180 (quoted fields may hold commas, quotes and line breaks). A first row that
is a header (its first cell is not a valid code, or it reads like ``pxcode,
procedure``/``code<TAB>title``) is skipped. Blank lines are skipped. Both cells are
stripped of surrounding spaces. Extra columns are rejected (a file with a third
column is more likely laid out differently than we think), except empty trailing
cells, which spreadsheets add. Rows are checked with the API's rules (the limits
and code pattern of ``starter.models``); duplicate codes are rejected. Any bad row
rejects the whole file.

On PostgreSQL the rows go through COPY: straight into the table when it is empty,
else into a temporary staging table followed by one ``INSERT ... ON CONFLICT DO
UPDATE`` (and for ``--replace`` one ``DELETE`` of the codes the file lacks), so an
import runs at close to ``psql \\copy`` speed. Other databases (SQLite) use
``executemany`` with the equivalent upsert.
"""

import csv
import io
import os
from dataclasses import dataclass

from contextlib import contextmanager

from flask import current_app
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from . import dbhealth
from .db import db
from .models import PROCEDURE_MAX, PXCODE_MAX, PXCODE_RULE, PxCode, is_pxcode, is_storable_text
from .textfile import TextFileError, read_utf8

# How many bad lines an error message names before "... and N more".
MAX_REPORTED = 5
# Rows per COPY call on PostgreSQL (each call advances the progress bar).
COPY_CHUNK = 50_000
# Header cells recognised when the first row's first cell is itself a valid code.
HEADER_CODE_NAMES = {"pxcode", "code", "px_code", "procedure_code", "drg", "ms-drg", "ms_drg"}
HEADER_TITLE_NAMES = {"procedure", "title", "description", "desc", "name", "long_title"}
TAB_EXTENSIONS = {".tsv", ".tab"}
COMMA_EXTENSIONS = {".csv"}


class ImportFileError(Exception):
    """The file cannot be imported; the message is one line and nothing was written."""


@dataclass
class ParsedFile:
    """A validated file: ``rows`` are ``(pxcode, procedure)`` in file order."""

    path: str
    rows: list
    delimiter: str
    header: list | None = None  # the cells of the skipped header row, if any


@dataclass
class ImportResult:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    replace: bool = False

    def summary(self):
        line = (
            f"inserted {self.inserted}, updated {self.updated}, "
            # Any bad row rejects the whole file: an import that ran rejected none.
            f"unchanged {self.unchanged}, rejected 0"
        )
        if self.replace:
            line += f", deleted {self.deleted}"
        return line


def validate_row(pxcode, procedure):
    """Return why ``(pxcode, procedure)`` is not a valid code (the API's rules), or None."""
    if not pxcode:
        return "pxcode is empty"
    if not is_pxcode(pxcode):
        return f"pxcode {_short(pxcode)!r} is not {PXCODE_RULE}"
    if not procedure:
        return "procedure is empty"
    if not is_storable_text(procedure):
        return "procedure holds control characters (tab, line break, NUL, ...)"
    if len(procedure) > PROCEDURE_MAX:
        return f"procedure is {len(procedure)} characters (at most {PROCEDURE_MAX})"
    return None


def _short(value, limit=20):
    return value if len(value) <= limit else value[:limit] + "..."


def sniff_delimiter(path, text):
    """Tab or comma: from the file name's extension, else from the first non-blank line."""
    extension = os.path.splitext(str(path))[1].lower()
    if extension in TAB_EXTENSIONS:
        return "\t"
    if extension in COMMA_EXTENSIONS:
        return ","
    for line in text.split("\n", 50)[:50]:
        if line.strip():
            return "\t" if "\t" in line else ","
    return "\t"


def _records(text, delimiter):
    """Yield ``(line_number, cells)`` for every non-blank record of the file."""
    if delimiter == "\t":
        for number, line in enumerate(text.split("\n"), start=1):
            if line.endswith("\r"):
                line = line[:-1]
            if line.strip():
                yield number, line.split("\t")
        return
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise ImportFileError(f"line {reader.line_num}: {exc}") from None
        if any(cell.strip() for cell in cells):
            yield start, cells
        start = reader.line_num + 1


def _is_header(cells):
    first = cells[0].strip()
    if not is_pxcode(first):
        return True
    second = cells[1].strip().lower() if len(cells) > 1 else ""
    return first.lower() in HEADER_CODE_NAMES and second in HEADER_TITLE_NAMES


def parse_text(text, delimiter):
    """Return ``(rows, header, errors)``: valid rows, the skipped header row's cells
    (or None), and ``(line_number, problem)`` for every rejected row."""
    rows = []
    errors = []
    seen = {}
    header = None
    first = True
    for number, cells in _records(text, delimiter):
        if first:
            first = False
            if _is_header(cells):
                header = cells
                continue
        while len(cells) > 2 and not cells[-1].strip():
            cells.pop()
        if len(cells) != 2:
            errors.append(
                (number, f"expected 2 columns (pxcode, procedure), found {len(cells)}")
            )
            continue
        pxcode = cells[0].strip()
        procedure = cells[1].strip()
        problem = validate_row(pxcode, procedure)
        if problem is None and pxcode in seen:
            problem = f"pxcode {pxcode!r} already on line {seen[pxcode]}"
        if problem is not None:
            errors.append((number, problem))
            continue
        seen[pxcode] = number
        rows.append((pxcode, procedure))
    return rows, header, errors


def parse_file(path):
    """Read and validate ``path``; return a ``ParsedFile`` or raise ``ImportFileError``."""
    try:
        content = read_utf8(path)
    except TextFileError as exc:
        raise ImportFileError(f"{exc} (nothing was imported)") from None
    delimiter = sniff_delimiter(path, content)
    try:
        rows, header, errors = parse_text(content, delimiter)
    except ImportFileError as exc:
        raise ImportFileError(f"{path}: {exc} (nothing was imported)") from None
    if errors:
        named = "; ".join(f"line {n}: {problem}" for n, problem in errors[:MAX_REPORTED])
        more = f"; and {len(errors) - MAX_REPORTED} more" if len(errors) > MAX_REPORTED else ""
        raise ImportFileError(
            f"{path}: rejected {len(errors)} row{'s' if len(errors) != 1 else ''},"
            f" nothing was imported: {named}{more}"
        )
    if not rows:
        raise ImportFileError(f"{path}: no codes in the file (nothing was imported)")
    return ParsedFile(path=str(path), rows=rows, delimiter=delimiter, header=header)


def load_rows(rows, replace=False, progress=None):
    """Write ``rows`` (validated, unique codes) in one transaction; return an ``ImportResult``.

    Without ``replace`` new codes are inserted and changed titles updated; with it,
    codes missing from ``rows`` are deleted too. ``progress(n)`` is called as rows
    are sent. Needs an application context.
    """
    progress = progress or (lambda n: None)
    engine = db.engine
    try:
        with _transaction(engine) as connection:
            if engine.dialect.name == "postgresql":
                result = _load_postgresql(connection, rows, replace, progress)
            else:
                result = _load_generic(connection, rows, replace, progress)
    except (DBAPIError, engine.dialect.loaded_dbapi.Error) as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ImportFileError(
            f"database error, nothing was imported: {detail[0] if detail else type(exc).__name__}"
        ) from exc
    result.replace = replace
    return result


@contextmanager
def _transaction(engine):
    """One transaction on ``engine``'s database.

    On PostgreSQL on a connection of its own that waits the blocking way: psycopg2
    refuses COPY under the service's wait callback (``dbhealth``), and a bulk load
    may outlast the deadlines the service gives its statements.
    """
    if engine.dialect.name != "postgresql":
        with engine.begin() as connection:
            yield connection
        return
    with dbhealth.blocking_waits():
        options = current_app.config["SQLALCHEMY_ENGINE_OPTIONS"]
        plain = create_engine(engine.url, poolclass=NullPool, connect_args=options.get("connect_args", {}))
        try:
            with plain.begin() as connection:
                yield connection
        finally:
            plain.dispose()


def _copy_rows(cursor, table, rows, progress):
    """COPY ``rows`` into ``table (pxcode, procedure)`` in chunks, from memory (CSV)."""
    for start in range(0, len(rows), COPY_CHUNK):
        chunk = rows[start : start + COPY_CHUNK]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(chunk)
        buffer.seek(0)
        cursor.copy_expert(f"COPY {table} (pxcode, procedure) FROM STDIN WITH (FORMAT csv)", buffer)
        progress(len(chunk))


def _load_postgresql(connection, rows, replace, progress):
    table = PxCode.__tablename__
    staging = "starter_pxcodes_import"
    cursor = connection.connection.driver_connection.cursor()
    result = ImportResult()
    # A bulk load is allowed to outlast the service's per-request statement timeout.
    cursor.execute("SET LOCAL statement_timeout = 0")
    # Writers wait for the import (readers do not): the counts stay exact.
    cursor.execute(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
    cursor.execute(f"SELECT count(*) FROM {table}")
    existing = cursor.fetchone()[0]
    if existing == 0:
        # Empty table: every row is new, COPY straight in (what psql \copy does).
        _copy_rows(cursor, table, rows, progress)
        result.inserted = len(rows)
        return result
    cursor.execute(
        f"CREATE TEMP TABLE {staging}"
        f" (pxcode varchar({PXCODE_MAX}), procedure varchar({PROCEDURE_MAX}))"
        " ON COMMIT DROP"
    )
    _copy_rows(cursor, staging, rows, progress)
    cursor.execute(f"ANALYZE {staging}")
    cursor.execute(
        "SELECT count(t.pxcode), count(*) FILTER (WHERE t.procedure IS DISTINCT FROM s.procedure)"
        f" FROM {staging} AS s LEFT JOIN {table} AS t ON t.pxcode = s.pxcode"
    )
    matched, changed = cursor.fetchone()
    # Statements that change nothing are skipped: the data-version trigger fires per
    # statement, so a no-op import does not invalidate the service's caches.
    if replace and existing > matched:
        cursor.execute(
            f"DELETE FROM {table} AS t WHERE NOT EXISTS"
            f" (SELECT 1 FROM {staging} AS s WHERE s.pxcode = t.pxcode)"
        )
        result.deleted = cursor.rowcount
    if changed:
        cursor.execute(
            "WITH upserted AS ("
            f" INSERT INTO {table} AS t (pxcode, procedure)"
            f" SELECT pxcode, procedure FROM {staging}"
            " ON CONFLICT (pxcode) DO UPDATE SET procedure = EXCLUDED.procedure"
            " WHERE t.procedure IS DISTINCT FROM EXCLUDED.procedure"
            " RETURNING (xmax = 0) AS inserted)"
            " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)"
            " FROM upserted"
        )
        result.inserted, result.updated = cursor.fetchone()
    result.unchanged = len(rows) - result.inserted - result.updated
    return result


def _load_generic(connection, rows, replace, progress):
    table = PxCode.__tablename__
    existing = dict(connection.execute(text(f"SELECT pxcode, procedure FROM {table}")).all())
    result = ImportResult()
    changed = []
    for pxcode, procedure in rows:
        old = existing.get(pxcode)
        if old is None:
            result.inserted += 1
            changed.append((pxcode, procedure))
        elif old != procedure:
            result.updated += 1
            changed.append((pxcode, procedure))
        else:
            result.unchanged += 1
    if replace:
        wanted = {pxcode for pxcode, _ in rows}
        gone = [(pxcode,) for pxcode in existing if pxcode not in wanted]
        if gone:
            connection.execute(
                text(f"DELETE FROM {table} WHERE pxcode = :pxcode"),
                [{"pxcode": pxcode} for (pxcode,) in gone],
            )
        result.deleted = len(gone)
    upsert = text(
        f"INSERT INTO {table} (pxcode, procedure) VALUES (:pxcode, :procedure)"
        " ON CONFLICT (pxcode) DO UPDATE SET procedure = excluded.procedure"
        f" WHERE {table}.procedure IS NOT excluded.procedure"
    )
    for start in range(0, len(changed), COPY_CHUNK):
        chunk = changed[start : start + COPY_CHUNK]
        connection.execute(upsert, [{"pxcode": c, "procedure": p} for c, p in chunk])
        progress(len(chunk))
    progress(len(rows) - len(changed))
    return result
