"""Admin flag, search indexes, and data versions kept by triggers.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Which version column each table's changes bump.
VERSIONED = {"starter_pxcodes": "version", "starter_users": "users_version"}

# Statement triggers, so a bulk import bumps a version once; the transition
# table lets a statement that changed nothing (a reload: ON CONFLICT DO
# NOTHING) leave the version, and with it every cached page, alone.
POSTGRES_FUNCTION = """
CREATE OR REPLACE FUNCTION starter_bump_data_version() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    bump text := format(
        'UPDATE starter_data_version SET %1$I = %1$I + 1 WHERE id = 1', TG_ARGV[0]);
BEGIN
    -- Two branches: changed_rows does not exist for TRUNCATE.
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE bump;
    ELSIF EXISTS (SELECT 1 FROM changed_rows) THEN
        EXECUTE bump;
    END IF;
    RETURN NULL;
END
$$;
"""
POSTGRES_TRIGGERS = {
    "insert": "AFTER INSERT ON {table} REFERENCING NEW TABLE AS changed_rows",
    "update": "AFTER UPDATE ON {table} REFERENCING NEW TABLE AS changed_rows",
    "delete": "AFTER DELETE ON {table} REFERENCING OLD TABLE AS changed_rows",
    "truncate": "AFTER TRUNCATE ON {table}",
}

# SQLite has row triggers only.
SQLITE_TRIGGER = """
CREATE TRIGGER {table}_version_{event}
AFTER {event} ON {table}
BEGIN
    UPDATE starter_data_version SET {column} = {column} + 1 WHERE id = 1;
END
"""
SQLITE_EVENTS = ("insert", "update", "delete")


def upgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("starter_users") as batch:
        batch.add_column(
            sa.Column("is_admin", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_index(
        "ix_starter_pxcodes_procedure_pxcode", "starter_pxcodes", ["procedure", "pxcode"]
    )
    if postgres:
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.create_index(
            "ix_starter_pxcodes_pxcode_pattern",
            "starter_pxcodes",
            ["pxcode"],
            postgresql_ops={"pxcode": "varchar_pattern_ops"},
        )
        op.create_index(
            "ix_starter_pxcodes_procedure_trgm",
            "starter_pxcodes",
            ["procedure"],
            postgresql_using="gin",
            postgresql_ops={"procedure": "gin_trgm_ops"},
        )
    versions = op.create_table(
        "starter_data_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("epoch", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("users_version", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(
        versions, [{"id": 1, "epoch": uuid.uuid4().hex, "version": 1, "users_version": 1}]
    )
    if postgres:
        op.execute(POSTGRES_FUNCTION)
    for table, column in VERSIONED.items():
        if postgres:
            for event, when in POSTGRES_TRIGGERS.items():
                op.execute(
                    f"CREATE TRIGGER {table}_version_{event} {when.format(table=table)}"
                    f" FOR EACH STATEMENT EXECUTE FUNCTION starter_bump_data_version('{column}')"
                )
        else:
            for event in SQLITE_EVENTS:
                op.execute(SQLITE_TRIGGER.format(table=table, event=event.upper(), column=column))


def downgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    for table in VERSIONED:
        for event in POSTGRES_TRIGGERS if postgres else SQLITE_EVENTS:
            on_table = f" ON {table}" if postgres else ""
            op.execute(f"DROP TRIGGER IF EXISTS {table}_version_{event}{on_table}")
    if postgres:
        op.execute("DROP FUNCTION IF EXISTS starter_bump_data_version()")
        op.drop_index("ix_starter_pxcodes_procedure_trgm", table_name="starter_pxcodes")
        op.drop_index("ix_starter_pxcodes_pxcode_pattern", table_name="starter_pxcodes")
    op.drop_table("starter_data_version")
    op.drop_index("ix_starter_pxcodes_procedure_pxcode", table_name="starter_pxcodes")
    with op.batch_alter_table("starter_users") as batch:
        batch.drop_column("is_admin")
