"""The change log (migration 0005, ``starter.changelog``): which codes a span of versions changed,
and the count of codes the triggers keep, on both databases."""

import pytest
from sqlalchemy import text

from starter import changelog
from starter.changelog import Change
from starter.db import db
from starter.models import DataVersion, PxCode


def _run(app, *statements):
    """Run ``statements`` in one transaction; return the version tags before and after."""
    with app.app_context():
        before = DataVersion.current().codes
    with app.app_context():
        for statement in statements:
            db.session.execute(text(statement))
        db.session.commit()
    with app.app_context():
        return before, DataVersion.current().codes


def _changes(app, since, until):
    with app.app_context():
        return changelog.changes_between(db.session, since, until)


@pytest.mark.parametrize(
    ("statements", "expected"),
    [
        (["INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('X1', 'NEW ONE')"],
         {Change("X1", None, "NEW ONE")}),
        (["UPDATE starter_pxcodes SET procedure = 'CHANGED' WHERE pxcode = '039'"],
         {Change("039", "EXTRACRANIAL PROCEDURES W/O CC/MCC", "CHANGED")}),
        (["DELETE FROM starter_pxcodes WHERE pxcode = '039'"],
         {Change("039", "EXTRACRANIAL PROCEDURES W/O CC/MCC", None)}),
        # A rename, as psql may make it: the old code gone, the new one there.
        (["UPDATE starter_pxcodes SET pxcode = 'X039' WHERE pxcode = '039'"],
         {Change("039", "EXTRACRANIAL PROCEDURES W/O CC/MCC", None),
          Change("X039", None, "EXTRACRANIAL PROCEDURES W/O CC/MCC")}),
        # Two statements in one transaction: two versions, both accounted for.
        (["UPDATE starter_pxcodes SET procedure = 'A' WHERE pxcode = '039'",
          "UPDATE starter_pxcodes SET procedure = 'B' WHERE pxcode = '057'"],
         {Change("039", "EXTRACRANIAL PROCEDURES W/O CC/MCC", "A"),
          Change("057", "DEGENERATIVE NERVOUS SYSTEM DISORDERS W/O MCC", "B")}),
    ],
)
def test_the_log_names_each_changed_code(app, statements, expected):
    before, after = _run(app, *statements)
    assert set(_changes(app, before, after)) == expected


def test_no_change_between_a_version_and_itself(app):
    with app.app_context():
        version = DataVersion.current().codes
    assert _changes(app, version, version) == ()


def test_an_update_that_changes_nothing_keeps_the_version(app):
    before, after = _run(app, "UPDATE starter_pxcodes SET procedure = procedure WHERE pxcode = '039'")
    assert after == before


def test_spans_the_log_cannot_answer_are_unknown(app):
    before, after = _run(app, "UPDATE starter_pxcodes SET procedure = 'A' WHERE pxcode = '039'")
    epoch, _, number = after.rpartition(".")
    assert _changes(app, after, before) is None  # backwards
    assert _changes(app, f"other.{int(number) - 1}", after) is None  # another epoch
    assert _changes(app, f"{epoch}.{int(number) - changelog.KEPT_VERSIONS - 1}", after) is None
    # A version bumped by hand has no log rows: what changed is not known.
    bumped_before, bumped = _run(app, "UPDATE starter_data_version SET version = version + 1")
    assert _changes(app, bumped_before, bumped) is None
    assert _changes(app, before, bumped) is None


def test_a_bulk_statement_is_not_listed(app):
    rows = ", ".join(f"('B{i}', 'BULK {i}')" for i in range(1001))
    before, after = _run(app, f"INSERT INTO starter_pxcodes (pxcode, procedure) VALUES {rows}")
    with app.app_context():
        postgres = db.engine.dialect.name == "postgresql"
    # PostgreSQL's statement trigger writes one "anything changed" row; SQLite's row triggers
    # log each row under a version of its own, so the span is wider than the log keeps.
    assert _changes(app, before, after) is None
    if not postgres:
        epoch, _, number = after.rpartition(".")
        last = _changes(app, f"{epoch}.{int(number) - 1}", after)
        assert last == (Change("B1000", None, "BULK 1000"),)


def test_the_log_keeps_a_bounded_number_of_versions(app):
    with app.app_context():
        for i in range(changelog.KEPT_VERSIONS + 5):
            db.session.execute(text(f"UPDATE starter_pxcodes SET procedure = 'V{i}' WHERE pxcode = '039'"))
        db.session.commit()
        versions = db.session.scalar(text("SELECT count(DISTINCT version) FROM starter_pxcode_changes"))
    assert versions <= changelog.KEPT_VERSIONS


def test_the_count_of_codes_is_kept(app):
    def counted():
        with app.app_context():
            kept = db.session.scalar(text("SELECT codes FROM starter_data_version"))
            return kept, db.session.query(PxCode).count()

    assert counted() == (100, 100)
    _run(app, "INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('X1', 'A'), ('X2', 'B')")
    assert counted() == (102, 102)
    _run(app, "DELETE FROM starter_pxcodes WHERE pxcode LIKE 'X%'",
         "UPDATE starter_pxcodes SET pxcode = 'R039' WHERE pxcode = '039'")
    assert counted() == (100, 100)
    with app.app_context():
        postgres = db.engine.dialect.name == "postgresql"
    _run(app, "TRUNCATE starter_pxcodes" if postgres else "DELETE FROM starter_pxcodes")
    assert counted() == (0, 0)
