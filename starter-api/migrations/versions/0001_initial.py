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


def upgrade():
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
    )
    op.create_index("ix_starter_pxcodes_pxcode", "starter_pxcodes", ["pxcode"], unique=True)


def downgrade():
    op.drop_index("ix_starter_pxcodes_pxcode", table_name="starter_pxcodes")
    op.drop_table("starter_pxcodes")
    op.drop_table("starter_users")
