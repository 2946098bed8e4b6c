"""What the app counts, read from its own registry (each app has one outside multi-process mode)."""

from starter import observability


def _value(app, name, **labels):
    return observability.metrics(app).registry.get_sample_value(name, labels) or 0


def test_requests_are_counted_by_route_template_method_and_status(app, client, auth):
    for _ in range(3):
        client.get("/api/v1.0/pxcodes/039", headers=auth.basic())
    client.get("/api/v1.0/pxcodes/none", headers=auth.basic())
    client.get("/nowhere/at/all")
    route = "/api/v1.0/pxcodes/<pxcode>"
    assert _value(app, "starter_http_requests_total", route=route, method="GET", status="200") == 3
    assert _value(app, "starter_http_requests_total", route=route, method="GET", status="404") == 1
    assert _value(app, "starter_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert _value(app, "starter_http_request_duration_seconds_count", route=route, method="GET") == 4


def test_failed_logins_and_password_hashes_are_counted(app, client, auth):
    client.get("/api/v1.0/pxcodes/039", headers=auth.basic(password="wrong"))
    client.get("/api/v1.0/pxcodes/039", headers=auth.basic(username="nobody", password="wrong"))
    for _ in range(3):  # verified once, then remembered
        client.get("/api/v1.0/pxcodes/039", headers=auth.basic())
    assert _value(app, "starter_failed_logins_total") == 2
    assert _value(app, "starter_password_hashes_total") == 3


def test_database_errors_are_counted(make_app, auth):
    app = make_app(SQLALCHEMY_DATABASE_URI="postgresql+psycopg2://x@127.0.0.1:9/x", DB_CONNECT_TIMEOUT=1)
    assert app.test_client().get("/api/v1.0/pxcodes/", headers=auth.basic()).status_code == 503
    assert _value(app, "starter_database_errors_total") == 1


def test_imported_rows_are_counted_by_outcome(app, tmp_path):
    path = tmp_path / "codes.tsv"
    path.write_text("039\tEXTRACRANIAL PROCEDURES W/O CC/MCC\n057\tA NEW TITLE\nX1\tNEW CODE\n")
    result = app.test_cli_runner().invoke(args=["import-pxcodes", str(path)])
    assert result.exit_code == 0, result.output
    assert [_value(app, "starter_imported_rows_total", outcome=o) for o in ("inserted", "updated", "unchanged")] == [1, 1, 1]


def test_rate_limit_refusals_are_counted_by_limit(make_seeded_app, auth):
    app = make_seeded_app(RATELIMIT_PER_USER="2 per minute", RATELIMIT_FAILED_LOGINS="1 per minute")
    client = app.test_client()
    statuses = [client.get("/api/v1.0/pxcodes/039", headers=auth.basic()).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    for _ in range(2):
        client.get("/api/v1.0/pxcodes/039", headers=auth.basic(password="wrong"))
    assert _value(app, "starter_rate_limit_refusals_total", limit="per-user") == 1
    assert _value(app, "starter_rate_limit_refusals_total", limit="failed-login-user") == 1



def test_the_sampling_thread_ends_with_its_app(tmp_path):
    """One app per worker in production, but many per test process: a thread kept for each would
    keep every app, its engine and pool, alive and waking each second."""
    import gc
    import threading

    from starter import create_app

    def samplers():
        return [t for t in threading.enumerate() if t.name == "metrics-sampler"]

    before = samplers()
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.sqlite", "SECRET_KEY": "x", "LOG_DIR": None})
    assert app.test_client().get("/healthz").status_code == 200  # a request starts the sampling
    started = [t for t in samplers() if t not in before]
    assert len(started) == 1
    del app
    gc.collect()
    started[0].join(timeout=5)
    assert not started[0].is_alive(), "the sampling thread outlived its app"
