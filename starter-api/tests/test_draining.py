"""The drain's socket work in one process: what the master watches, what a worker does on its signal."""

import os
import socket

import pytest

from starter.draining import still_listening, stop_listening


def test_a_process_that_stops_listening_refuses_new_connections():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert still_listening([os.getpid()], port) == [os.getpid()]
        stop_listening()
        assert still_listening([os.getpid()], port) == []
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        # The descriptor the server accepts on is still a listening socket (its accept loop waits
        # on it), on a port nobody knows.
        assert listener.getsockname()[1] != port
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
