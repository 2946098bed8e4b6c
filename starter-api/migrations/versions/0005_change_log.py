"""The codes' change log and their count, kept by the triggers that bump the data version.

Every statement that changes codes bumps ``starter_data_version.version`` (as
since 0002) and now also writes what it changed to ``starter_pxcode_changes``
under the new version: one row per code, its title before (``old_procedure``,
NULL for a new code) and after (``new_procedure``, NULL for a deleted one). A
statement that changes more than ``LISTED_MAX`` codes, or a TRUNCATE, writes one
row with a NULL ``pxcode``: "anything may have changed". Only the last
``KEPT_VERSIONS`` versions are kept. Readers (``starter.changelog``) learn from it
which codes changed between two versions, so a cache need not forget what a
write did not touch.

``starter_data_version.codes`` counts the codes, kept by the same triggers, so
the size of the table is known without counting it.

An UPDATE that leaves every row as it was changes no version (it used to bump
one). SQLite has row triggers only: each row bumps the version and logs itself.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LISTED_MAX = 1000
KEPT_VERSIONS = 1000

TABLE = """
CREATE TABLE starter_pxcode_changes (
    version bigint NOT NULL,
    pxcode varchar(10),
    old_procedure varchar(255),
    new_procedure varchar(255)
)
"""
INDEX = "CREATE INDEX ix_starter_pxcode_changes_version ON starter_pxcode_changes (version)"

# The rows a statement changed, as (pxcode, old_procedure, new_procedure). An update
# that renames a code (psql may; the API may not) is the old code gone and a new one.
CHANGED_ROWS = {
    "INSERT": "SELECT pxcode, NULL::varchar, procedure FROM new_rows",
    "DELETE": "SELECT pxcode, procedure, NULL::varchar FROM old_rows",
    "UPDATE": """
        SELECT n.pxcode, o.procedure, n.procedure FROM new_rows n JOIN old_rows o USING (id)
        WHERE o.pxcode = n.pxcode AND o.procedure IS DISTINCT FROM n.procedure
        UNION ALL
        SELECT o.pxcode, o.procedure, NULL FROM new_rows n JOIN old_rows o USING (id)
        WHERE o.pxcode <> n.pxcode
        UNION ALL
        SELECT n.pxcode, NULL, n.procedure FROM new_rows n JOIN old_rows o USING (id)
        WHERE o.pxcode <> n.pxcode
    """,
}
COUNT_CHANGE = {"INSERT": "(SELECT count(*) FROM new_rows)", "DELETE": "-(SELECT count(*) FROM old_rows)"}


def _branch(op_name):
    rows = CHANGED_ROWS[op_name]
    count = COUNT_CHANGE.get(op_name, "0")
    # Counted first, up to one past the bound: a bulk statement is not listed at all.
    return f"""
        SELECT count(*) INTO listed FROM ({rows} LIMIT {LISTED_MAX + 1}) AS changed;
        IF listed = 0 THEN
            RETURN NULL;  -- nothing changed: the version stays, and every cache with it
        END IF;
        UPDATE starter_data_version SET version = version + 1, codes = codes + {count}
            WHERE id = 1 RETURNING version INTO bumped;
        IF listed > {LISTED_MAX} THEN
            INSERT INTO starter_pxcode_changes (version) VALUES (bumped);
        ELSE
            INSERT INTO starter_pxcode_changes SELECT bumped, * FROM ({rows}) AS changed;
        END IF;
    """


POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION starter_log_pxcode_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    listed bigint;
    bumped bigint;
BEGIN
    -- One branch per event: each names only the transition tables its event has.
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE starter_data_version SET version = version + 1, codes = 0
            WHERE id = 1 RETURNING version INTO bumped;
        INSERT INTO starter_pxcode_changes (version) VALUES (bumped);
    ELSIF TG_OP = 'INSERT' THEN
        {_branch("INSERT")}
    ELSIF TG_OP = 'DELETE' THEN
        {_branch("DELETE")}
    ELSE
        {_branch("UPDATE")}
    END IF;
    DELETE FROM starter_pxcode_changes WHERE version <= bumped - {KEPT_VERSIONS};
    RETURN NULL;
END
$$;
"""
POSTGRES_TRIGGERS = {
    "insert": "AFTER INSERT ON starter_pxcodes REFERENCING NEW TABLE AS new_rows",
    "update": "AFTER UPDATE ON starter_pxcodes REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "AFTER DELETE ON starter_pxcodes REFERENCING OLD TABLE AS old_rows",
    "truncate": "AFTER TRUNCATE ON starter_pxcodes",
}
# Migration 0002's triggers: the same names, bumping the version only.
OLD_POSTGRES_TRIGGERS = {
    "insert": "AFTER INSERT ON starter_pxcodes REFERENCING NEW TABLE AS changed_rows",
    "update": "AFTER UPDATE ON starter_pxcodes REFERENCING NEW TABLE AS changed_rows",
    "delete": "AFTER DELETE ON starter_pxcodes REFERENCING OLD TABLE AS changed_rows",
    "truncate": "AFTER TRUNCATE ON starter_pxcodes",
}

NEXT_VERSION = "(SELECT version FROM starter_data_version WHERE id = 1)"
SQLITE_TRIGGERS = {
    "INSERT": ("codes + 1", "NEW.pxcode, NULL, NEW.procedure", ""),
    "DELETE": ("codes - 1", "OLD.pxcode, OLD.procedure, NULL", ""),
    # A rename (psql may; the API may not) is a new code here, the old one gone below.
    "UPDATE": ("codes",
               "NEW.pxcode, CASE WHEN OLD.pxcode IS NEW.pxcode THEN OLD.procedure END, NEW.procedure",
               " WHEN OLD.pxcode IS NOT NEW.pxcode OR OLD.procedure IS NOT NEW.procedure"),
}
SQLITE_TRIGGER = """
CREATE TRIGGER starter_pxcodes_version_{event}
AFTER {event} ON starter_pxcodes{when}
BEGIN
    UPDATE starter_data_version SET version = version + 1, codes = {count} WHERE id = 1;
    INSERT INTO starter_pxcode_changes VALUES ({next_version}, {values});{renamed}
    DELETE FROM starter_pxcode_changes WHERE version <= {next_version} - {kept};
END
"""
SQLITE_RENAMED = f"""
    INSERT INTO starter_pxcode_changes SELECT {NEXT_VERSION}, OLD.pxcode, OLD.procedure, NULL
        WHERE OLD.pxcode IS NOT NEW.pxcode;"""
OLD_SQLITE_TRIGGER = """
CREATE TRIGGER starter_pxcodes_version_{event}
AFTER {event} ON starter_pxcodes
BEGIN
    UPDATE starter_data_version SET version = version + 1 WHERE id = 1;
END
"""


def upgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    # createdb drops the mapped tables only: a log left from before is rebuilt.
    op.execute("DROP TABLE IF EXISTS starter_pxcode_changes")
    op.execute(TABLE)
    op.execute(INDEX)
    with op.batch_alter_table("starter_data_version") as batch:
        batch.add_column(sa.Column("codes", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute("UPDATE starter_data_version SET codes = (SELECT count(*) FROM starter_pxcodes)")
    if postgres:
        op.execute(POSTGRES_FUNCTION)
        for event, when in POSTGRES_TRIGGERS.items():
            op.execute(f"DROP TRIGGER IF EXISTS starter_pxcodes_version_{event} ON starter_pxcodes")
            op.execute(
                f"CREATE TRIGGER starter_pxcodes_version_{event} {when}"
                " FOR EACH STATEMENT EXECUTE FUNCTION starter_log_pxcode_changes()"
            )
        return
    for event, (count, values, when) in SQLITE_TRIGGERS.items():
        op.execute(f"DROP TRIGGER IF EXISTS starter_pxcodes_version_{event.lower()}")
        op.execute(SQLITE_TRIGGER.format(
            event=event, when=when, count=count, values=values,
            next_version=NEXT_VERSION, kept=KEPT_VERSIONS,
            renamed=SQLITE_RENAMED if event == "UPDATE" else "",
        ))


def downgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        for event, when in OLD_POSTGRES_TRIGGERS.items():
            op.execute(f"DROP TRIGGER IF EXISTS starter_pxcodes_version_{event} ON starter_pxcodes")
            op.execute(
                f"CREATE TRIGGER starter_pxcodes_version_{event} {when}"
                " FOR EACH STATEMENT EXECUTE FUNCTION starter_bump_data_version('version')"
            )
        op.execute("DROP FUNCTION IF EXISTS starter_log_pxcode_changes()")
    else:
        for event in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS starter_pxcodes_version_{event.lower()}")
            op.execute(OLD_SQLITE_TRIGGER.format(event=event))
    # Not a batch (a copy of the table): the users' triggers name it, and SQLite 3.35+ drops columns.
    op.execute("ALTER TABLE starter_data_version DROP COLUMN codes")
    op.execute("DROP TABLE IF EXISTS starter_pxcode_changes")
