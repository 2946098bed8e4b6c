"""Admin flag, search indexes, and the data version kept by a trigger.

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

# Statement triggers, so a bulk import bumps the version once; the transition
# table lets a statement that changed nothing (a reload: ON CONFLICT DO
# NOTHING) leave the version, and with it every cached page, alone.
POSTGRES_TRIGGERS = """
CREATE OR REPLACE FUNCTION starter_bump_data_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Two branches: changed_rows does not exist for TRUNCATE.
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE starter_data_version SET version = version + 1 WHERE id = 1;
    ELSIF EXISTS (SELECT 1 FROM changed_rows) THEN
        UPDATE starter_data_version SET version = version + 1 WHERE id = 1;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER starter_pxcodes_version_insert AFTER INSERT ON starter_pxcodes
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION starter_bump_data_version();
CREATE TRIGGER starter_pxcodes_version_update AFTER UPDATE ON starter_pxcodes
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION starter_bump_data_version();
CREATE TRIGGER starter_pxcodes_version_delete AFTER DELETE ON starter_pxcodes
    REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION starter_bump_data_version();
CREATE TRIGGER starter_pxcodes_version_truncate AFTER TRUNCATE ON starter_pxcodes
    FOR EACH STATEMENT EXECUTE FUNCTION starter_bump_data_version();
"""
POSTGRES_TRIGGER_NAMES = ("insert", "update", "delete", "truncate")

# SQLite has row triggers only.
SQLITE_TRIGGER = """
CREATE TRIGGER starter_pxcodes_data_version_{event}
AFTER {event} ON starter_pxcodes
BEGIN
    UPDATE starter_data_version SET version = version + 1 WHERE id = 1;
END
"""
SQLITE_EVENTS = ("INSERT", "UPDATE", "DELETE")


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
    version = op.create_table(
        "starter_data_version",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("epoch", sa.String(length=32), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(version, [{"id": 1, "epoch": uuid.uuid4().hex, "version": 1}])
    if postgres:
        op.execute(POSTGRES_TRIGGERS)
    else:
        for event in SQLITE_EVENTS:
            op.execute(SQLITE_TRIGGER.format(event=event))


def downgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        for name in POSTGRES_TRIGGER_NAMES:
            op.execute(f"DROP TRIGGER IF EXISTS starter_pxcodes_version_{name} ON starter_pxcodes")
        op.execute("DROP FUNCTION IF EXISTS starter_bump_data_version()")
        op.drop_index("ix_starter_pxcodes_procedure_trgm", table_name="starter_pxcodes")
        op.drop_index("ix_starter_pxcodes_pxcode_pattern", table_name="starter_pxcodes")
    else:
        for event in SQLITE_EVENTS:
            op.execute(f"DROP TRIGGER IF EXISTS starter_pxcodes_data_version_{event}")
    op.drop_table("starter_data_version")
    op.drop_index("ix_starter_pxcodes_procedure_pxcode", table_name="starter_pxcodes")
    with op.batch_alter_table("starter_users") as batch:
        batch.drop_column("is_admin")
