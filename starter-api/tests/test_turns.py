"""At most SERVER_THREADS requests of a worker run at once; a wait for a body or for another
request's answer gives the turn back (starter.http.turns)."""

import io
import threading
import time

from starter.http.turns import Turns

from helpers import AuthActions

LIST = "/api/v1.0/pxcodes/"


def test_no_more_requests_run_at_once_than_there_are_turns():
    running, most, lock = [0], [0], threading.Lock()

    def app(environ, start_response):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.02)
        with lock:
            running[0] -= 1
        start_response("200 OK", [])
        return [b"ok"]

    turns = Turns(app, 2)
    threads = [threading.Thread(target=turns, args=({}, lambda *a: None)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 2


def test_a_request_that_waits_lets_another_run_meanwhile():
    order, release = [], threading.Event()

    def app(environ, start_response):
        if environ["name"] == "waiting":
            with turns.waiting():
                release.wait(5)
        order.append(environ["name"])
        if environ["name"] == "other":
            release.set()
        return [b""]

    turns = Turns(app, 1)
    waiting = threading.Thread(target=turns, args=({"name": "waiting"}, None))
    waiting.start()
    time.sleep(0.05)
    turns({"name": "other"}, None)  # gets the one turn while the first waits
    waiting.join(5)
    assert order == ["other", "waiting"]


def test_turns_go_first_come_first_served():
    """A request given its turn back does not take it again ahead of one already waiting."""
    order, go = [], threading.Event()

    def app(environ, start_response):
        if environ["name"] == "first":
            go.wait(5)
        order.append(environ["name"])
        return [b""]

    turns = Turns(app, 1)
    first = threading.Thread(target=turns, args=({"name": "first"}, None))
    first.start()
    time.sleep(0.05)
    second = threading.Thread(target=turns, args=({"name": "second"}, None))
    second.start()
    time.sleep(0.05)  # waiting for the turn

    def first_again():
        first.join()
        turns({"name": "first again"}, None)  # at once: the turn is already the second one's

    again = threading.Thread(target=first_again)
    again.start()
    go.set()
    for thread in (first, second, again):
        thread.join(5)
    assert order == ["first", "second", "first again"]


def test_a_body_that_does_not_come_holds_no_turn(make_seeded_app):
    """One turn: a create waiting for its body gives it back, and another request is answered."""
    app = make_seeded_app(SERVER_THREADS=1, REQUEST_BODY_TIMEOUT=5)
    client = app.test_client()
    auth = AuthActions(client)
    sent = threading.Event()

    body = b'{"pxcode": "T01", "procedure": "TURNS"}'

    class SlowBody(io.BytesIO):
        def read(self, size=-1):
            sent.wait(5)
            return super().read(size)

    created = {}

    def create():
        created["response"] = client.post(
            LIST, input_stream=SlowBody(body), content_length=len(body), content_type="application/json",
            headers=auth.basic(),
        )

    writer = threading.Thread(target=create)
    writer.start()
    time.sleep(0.2)  # past the body's patience: the create waits for its body
    started = time.monotonic()
    assert client.get(LIST + "039", headers=auth.basic()).status_code == 200
    assert time.monotonic() - started < 1 and "response" not in created
    sent.set()
    writer.join(5)
    assert created["response"].status_code == 201, created["response"].json


def test_a_password_being_hashed_holds_no_turn(make_seeded_app, hold_hashes):
    """One turn: a request whose password is being hashed gives it back (the hash needs no GIL, and
    ``AUTH_PASSWORD_CHECKS`` bounds the hashes at once), so the other requests are answered meanwhile."""
    app = make_seeded_app(SERVER_THREADS=1)
    client = app.test_client()
    auth = AuthActions(client)
    token = auth.token()
    hashing, release, _ = hold_hashes()
    refused = {}
    checker = threading.Thread(target=lambda: refused.update(
        response=client.get(LIST + "039", headers=auth.basic(password="not-the-password"))))
    checker.start()
    assert hashing.wait(5)
    started = time.monotonic()
    assert client.get(LIST + "039", headers=auth.bearer(token)).status_code == 200
    assert time.monotonic() - started < 1 and "response" not in refused
    release.set()
    checker.join(5)
    assert refused["response"].status_code == 401
