"""The seed's two tables: starter_users and starter_pxcodes.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


# The API's rules for a code and a title, kept by the database too, so rows
# loaded behind the API's back (psql, loaddata) obey them as well.
CHECKS = {
    "postgresql": {
        "ck_starter_pxcodes_pxcode": "pxcode ~ '^[A-Za-z0-9][A-Za-z0-9.-]{0,9}$'",
        "ck_starter_pxcodes_procedure": "btrim(procedure) <> '' AND char_length(procedure) <= 255",
    },
    "sqlite": {
        "ck_starter_pxcodes_pxcode": (
            "length(pxcode) BETWEEN 1 AND 10 AND pxcode GLOB '[A-Za-z0-9]*'"
            " AND pxcode NOT GLOB '*[^A-Za-z0-9.-]*'"
        ),
        "ck_starter_pxcodes_procedure": "trim(procedure) <> '' AND length(procedure) <= 255",
    },
}


def upgrade():
    checks = CHECKS.get(op.get_bind().dialect.name, {})
    op.create_table(
        "starter_users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("username", sa.String(length=64), nullable=False, unique=True),
        sa.Column("password_hash", sa.String(length=256), nullable=False),
    )
    op.create_table(
        "starter_pxcodes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("pxcode", sa.String(length=10), nullable=False),
        sa.Column("procedure", sa.String(length=255), nullable=False),
        *(sa.CheckConstraint(sql, name=name) for name, sql in checks.items()),
    )
    op.create_index("ix_starter_pxcodes_pxcode", "starter_pxcodes", ["pxcode"], unique=True)


def downgrade():
    op.drop_index("ix_starter_pxcodes_pxcode", table_name="starter_pxcodes")
    op.drop_table("starter_pxcodes")
    op.drop_table("starter_users")
