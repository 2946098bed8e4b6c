"""Migrations: existing databases upgrade in place, and the models match the migrations."""

import flask_migrate
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, Table, text

from starter.db import db, drop_tables, for_dialect
from starter.models import User

HEAD = "0005"


def _at_baseline_with_data(app):
    """A database as the first release left it: the seed's two tables, with rows."""
    with app.app_context():
        drop_tables()
        flask_migrate.upgrade(revision="0001")
        db.session.execute(text(
            "INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('039', 'KEPT')"
        ))
        db.session.execute(text(
            "INSERT INTO starter_users (username, password_hash) VALUES ('old', 'x')"
        ))
        db.session.commit()


def test_upgrade_keeps_data(empty_app):
    _at_baseline_with_data(empty_app)
    result = empty_app.test_cli_runner().invoke(args=["bootstrap"])
    assert result.exit_code == 0, result.output
    with empty_app.app_context():
        assert db.session.scalar(text("SELECT procedure FROM starter_pxcodes")) == "KEPT"
        assert User.by_username("old").is_admin is False
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == HEAD


def test_bootstrap_adopts_a_schema_made_before_migrations(empty_app):
    _at_baseline_with_data(empty_app)
    with empty_app.app_context():
        Table("alembic_version", MetaData()).drop(db.engine)
    result = empty_app.test_cli_runner().invoke(args=["bootstrap"])
    assert result.exit_code == 0, result.output
    with empty_app.app_context():
        assert db.session.scalar(text("SELECT count(*) FROM starter_pxcodes")) == 1
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == HEAD


def test_downgrade_and_upgrade_again(empty_app):
    with empty_app.app_context():
        flask_migrate.downgrade(revision="base")
        flask_migrate.upgrade()
        assert db.session.scalar(text("SELECT version FROM starter_data_version")) >= 1


def test_models_match_the_migrations(empty_app):
    with empty_app.app_context(), db.engine.connect() as connection:
        include = for_dialect(connection.dialect.name)
        context = MigrationContext.configure(connection, opts={"include_object": include})
        differences = compare_metadata(context, db.metadata)
    assert differences == []
