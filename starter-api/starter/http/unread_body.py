"""Answers to requests whose body the app did not read say ``Connection: close``.

Many answers come before the body is read: 503 (the database is down), 401,
403, 412/428, 413, 429. granian then cannot reuse the connection unless the
body has already arrived, and it closes it, often without saying so: the
client's next request on that keep-alive connection meets a closed socket
(BrokenPipe, connection reset), a request lost without an answer. Announcing
the close (RFC 9112 §9.6) lets the client open a new connection instead.
Reading the body instead would hold a thread for as long as a slow client
takes to send it.
"""


class _CountingInput:
    """``wsgi.input``, counting what the app reads of it."""

    def __init__(self, stream):
        self._stream = stream
        self.consumed = 0
        self.at_end = False  # a read found the end of the body

    def _seen(self, data):
        self.consumed += len(data)
        if not data:
            self.at_end = True
        return data

    def read(self, size=-1):
        if size is None or size < 0:
            self.at_end = True
            return self._seen(self._stream.read())
        return self._seen(self._stream.read(size))

    def readline(self, size=-1):
        if size is None or size < 0:
            return self._seen(self._stream.readline())
        return self._seen(self._stream.readline(size))

    def readlines(self, hint=-1):
        return list(self)

    def __iter__(self):
        while line := self.readline():
            yield line


def _declared_length(environ):
    try:
        return int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def closing_after_unread_body(wsgi_app):
    """Wrap ``wsgi_app``: an answer sent before the request's body was read closes the connection."""

    def app(environ, start_response):
        length = _declared_length(environ)
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if length <= 0 and not chunked:
            return wsgi_app(environ, start_response)
        body = _CountingInput(environ["wsgi.input"])
        environ["wsgi.input"] = body

        def start(status, headers, exc_info=None):
            read_whole = body.at_end or (not chunked and body.consumed >= length)
            if not read_whole and not any(name.lower() == "connection" for name, _ in headers):
                headers = [*headers, ("Connection", "close")]
            return start_response(status, headers, exc_info)

        return wsgi_app(environ, start)

    return app
