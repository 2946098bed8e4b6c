"""Announce every change of the data versions (PostgreSQL NOTIFY).

Each worker listens on ``starter_data_version`` and so learns of a write made
anywhere (another worker, another replica, ``psql``) at its commit, without a
query per request. SQLite has no notifications: nothing to do there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CHANNEL = "starter_data_version"

# A statement trigger on the version row itself, so whatever bumps it (the
# data triggers, or a hand-made UPDATE) is announced. NOTIFY sends one message
# per transaction for identical payloads, and only when the transaction commits.
POSTGRES_FUNCTION = f"""
CREATE OR REPLACE FUNCTION starter_notify_data_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END
$$;
"""
POSTGRES_TRIGGER = """
CREATE TRIGGER starter_data_version_notify
AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON starter_data_version
FOR EACH STATEMENT EXECUTE FUNCTION starter_notify_data_version()
"""


def upgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(POSTGRES_FUNCTION)
    op.execute(POSTGRES_TRIGGER)
    # The version row may be new (createdb recreates the tables): say so to running services.
    op.execute(f"NOTIFY {CHANNEL}")


def downgrade():
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS starter_data_version_notify ON starter_data_version")
    op.execute("DROP FUNCTION IF EXISTS starter_notify_data_version()")
