"""The data version and the caches keyed by it: pages, counts, 304s, remembered credentials."""

import subprocess

import time

import pytest
from sqlalchemy import text

from starter.db import db
from starter.models import DataVersion, User

LIST = "/api/v1.0/pxcodes/"


def _version(app):
    with app.app_context():
        return DataVersion.current().codes


def test_every_kind_of_write_bumps_the_data_version(app):
    seen = [_version(app)]
    statements = [
        "INSERT INTO starter_pxcodes (pxcode, procedure) VALUES ('X1', 'ONE')",
        "UPDATE starter_pxcodes SET procedure = 'TWO' WHERE pxcode = 'X1'",
        "DELETE FROM starter_pxcodes WHERE pxcode = 'X1'",
    ]
    for statement in statements:
        with app.app_context():
            db.session.execute(text(statement))
            db.session.commit()
        seen.append(_version(app))
    assert len(set(seen)) == 4


def test_a_reload_that_changes_nothing_keeps_the_version(app):
    from starter.db import STARTER_SQL, run_sql_script

    before = _version(app)
    with app.app_context():
        run_sql_script(STARTER_SQL.read_text())
        db.session.execute(text("UPDATE starter_pxcodes SET procedure = 'X' WHERE pxcode = 'none'"))
        db.session.execute(text("DELETE FROM starter_pxcodes WHERE pxcode = 'none'"))
        db.session.commit()
    assert _version(app) == before


def test_emptying_the_table_bumps_the_version(app):
    before = _version(app)
    with app.app_context():
        # SQLite has no TRUNCATE; its unqualified DELETE is the same fast path.
        postgres = db.engine.dialect.name == "postgresql"
        db.session.execute(text("TRUNCATE starter_pxcodes" if postgres else "DELETE FROM starter_pxcodes"))
        db.session.commit()
    assert _version(app) != before


def test_a_rolled_back_write_leaves_the_version(app):
    before = _version(app)
    with app.app_context():
        db.session.execute(text("DELETE FROM starter_pxcodes"))
        db.session.rollback()
    assert _version(app) == before


def test_recreated_tables_never_repeat_a_version(app):
    before = _version(app)
    app.test_cli_runner().invoke(args=["createdb"])
    assert _version(app).split(".")[0] != before.split(".")[0]


def test_writes_behind_the_services_back_change_the_list(app, client, auth):
    first = client.get(LIST, headers=auth.basic())
    with app.app_context():
        db.session.execute(text("UPDATE starter_pxcodes SET procedure = 'EDITED BY SQL' WHERE pxcode = '039'"))
        db.session.commit()
    again = client.get(LIST, headers={**auth.basic(), "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 200
    assert again.json["items"][0]["procedure"] == "EDITED BY SQL"


def test_psql_import_changes_the_list_tag(make_app, postgres_url, auth, psql):
    app = make_app(SQLALCHEMY_DATABASE_URI=postgres_url)
    runner = app.test_cli_runner()
    assert runner.invoke(args=["createdb"]).exit_code == 0
    assert runner.invoke(args=["adduser", "alice", "wonderland"]).exit_code == 0
    client = app.test_client()
    empty = client.get(LIST, headers=auth.basic())
    assert empty.json["meta"]["total"] == 0
    from sqlalchemy.engine import make_url

    from starter.db import STARTER_SQL

    url = make_url(postgres_url)
    with STARTER_SQL.open("rb") as stdin:
        subprocess.run(
            [psql, "-h", url.host, "-U", url.username, url.database], stdin=stdin, check=True,
            capture_output=True, timeout=60,
        )
    after = client.get(LIST, headers={**auth.basic(), "If-None-Match": empty.headers["ETag"]})
    assert after.status_code == 200
    assert after.json["meta"]["total"] == 100


def test_a_write_in_one_worker_is_seen_by_another(make_app, app, auth):
    """Two apps stand for two server workers with their own caches, on one database."""
    worker_a, worker_b = app.test_client(), make_app().test_client()
    tag_a = worker_a.get(LIST, headers=auth.basic()).headers["ETag"]
    tag_b = worker_b.get(LIST, headers=auth.basic()).headers["ETag"]
    assert tag_a == tag_b
    created = worker_a.post(LIST, json={"pxcode": "X9", "procedure": "NEW"}, headers=auth.basic())
    assert created.status_code == 201
    seen_by_b = worker_b.get(LIST, headers={**auth.basic(), "If-None-Match": tag_b})
    assert seen_by_b.status_code == 200
    assert seen_by_b.json["meta"]["total"] == 101


def test_each_app_keeps_its_own_page_caches(make_app, app, auth):
    from starter.api.pxcodes import page_caches

    other = make_app()
    app.test_client().get(LIST + "?q=w/o", headers=auth.basic())
    assert len(page_caches(app)[0]._counts) == 1
    assert len(page_caches(other)[0]._counts) == 0
    assert len(page_caches(other)[1]._entries) == 0


def test_a_304_runs_no_page_query(client, auth, sql_log):
    tag = client.get(LIST, headers=auth.basic()).headers["ETag"]
    with sql_log() as statements:
        response = client.get(LIST, headers={**auth.basic(), "If-None-Match": tag})
    assert response.status_code == 304
    assert not [s for s in statements if "FROM starter_pxcodes" in s], statements
    assert any("starter_data_version" in s for s in statements)


def test_repeated_pages_are_rendered_once(app, client, auth, monkeypatch):
    import starter.api.pxcodes as views

    calls = []
    real = views.render_page
    monkeypatch.setattr(views, "render_page", lambda *a: calls.append(1) or real(*a))
    bodies = {client.get(LIST + "?per_page=5", headers=auth.basic()).data for _ in range(3)}
    assert len(bodies) == 1
    assert len(calls) == 1


def test_basic_auth_hashes_once_then_remembers(app, client, auth, password_checks):
    calls = password_checks
    for _ in range(5):
        assert client.get(LIST + "039", headers=auth.basic()).status_code == 200
    assert len(calls) == 1
    assert client.get(LIST + "039", headers=auth.basic("alice", "wrong")).status_code == 401
    assert len(calls) == 2


@pytest.mark.parametrize("change", ["password", "delete", "rename"])
def test_remembered_credentials_die_with_the_user(app, client, auth, change):
    assert client.get(LIST + "039", headers=auth.basic()).status_code == 200
    with app.app_context():
        user = User.by_username("alice")
        if change == "password":
            user.password = "new password"
        elif change == "delete":
            db.session.delete(user)
        else:
            user.username = "alicia"
        db.session.commit()
    assert client.get(LIST + "039", headers=auth.basic()).status_code == 401


def test_credentials_in_use_are_verified_again_before_they_expire(make_seeded_app, auth, password_checks):
    app = make_seeded_app(AUTH_CACHE_SECONDS=1)
    client = app.test_client()
    checked_at = password_checks
    started = time.monotonic()
    while time.monotonic() - started < 1.6:
        assert client.get(LIST + "039", headers=auth.basic()).status_code == 200
        time.sleep(0.02)
    # Re-checked by one request once past half its second, not after it ran out; never per request.
    assert 2 <= len(checked_at) <= 5
    assert 0.5 <= checked_at[1] - checked_at[0] < 0.9


def test_a_due_re_check_runs_in_the_background_while_the_request_is_answered(make_seeded_app, auth, hold_hashes):
    app = make_seeded_app(AUTH_CACHE_SECONDS=1)
    client = app.test_client()
    assert client.get(LIST + "039", headers=auth.basic()).status_code == 200
    time.sleep(0.6)  # past half its second: due to be verified again
    hashing, release, checked = hold_hashes()
    started = time.monotonic()
    assert client.get(LIST + "039", headers=auth.basic()).status_code == 200
    assert hashing.wait(5)  # claimed by that request, made by another thread...
    assert client.get(LIST + "039", headers=auth.basic()).status_code == 200
    assert time.monotonic() - started < 0.5 and not checked.is_set()  # ...that neither waited for
    release.set()
    assert checked.wait(5)
    time.sleep(0.6)  # past the first entry's second: the re-check renewed it
    hold_hashes(refuse=True)  # any check from here on would refuse
    assert client.get(LIST + "039", headers=auth.basic()).status_code == 200


def test_a_re_check_that_refuses_the_credentials_forgets_them(make_seeded_app, auth, hold_hashes):
    app = make_seeded_app(AUTH_CACHE_SECONDS=30)
    client = app.test_client()
    assert client.get(LIST + "039", headers=auth.basic()).status_code == 200
    entry = next(iter(app.extensions["starter_auth"].verified._entries.values()))
    entry.verified_at -= 16  # past half its time
    _, release, checked = hold_hashes(refuse=True)
    release.set()
    assert client.get(LIST + "039", headers=auth.basic()).status_code == 200  # answered from the entry
    assert checked.wait(5)
    time.sleep(0.1)
    # Forgotten: checked again by the request itself, and refused.
    assert client.get(LIST + "039", headers=auth.basic()).status_code == 401


def test_credential_cache_can_be_turned_off(make_app, app, auth, password_checks):
    uncached = make_app(AUTH_CACHE_SECONDS=0)
    calls = password_checks
    client = uncached.test_client()
    for _ in range(3):
        client.get(LIST + "039", headers=auth.basic())
    assert len(calls) == 3


def test_counts_are_cached_per_data_version(app, client, auth):
    from starter.api.pxcodes import page_caches

    pager, _ = page_caches(app)
    client.get(LIST + "?q=w/o", headers=auth.basic())
    assert len(pager._counts) == 1
    client.get(LIST + "?q=w/o&page=2&per_page=10", headers=auth.basic())
    assert len(pager._counts) == 1  # same listing, same version: counted once
    client.post(LIST, json={"pxcode": "X2", "procedure": "W/O MORE"}, headers=auth.basic())
    body = client.get(LIST + "?q=w/o", headers=auth.basic()).json
    assert len(pager._counts) == 2
    assert body["meta"]["total"] == sum(
        "W/O" in i["procedure"]
        for i in client.get(LIST + "?per_page=100", headers=auth.basic()).json["items"]
    ) + 1  # X2 sorts after 948, so it is on page 2 of the full list
