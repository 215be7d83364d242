"""Real HTTP servers on 127.0.0.1: one for download tests (it serves a
folder, can cut one file short, and can be stopped to prove a cache needs
no network), one answering POSTs as TF Serving's REST API does."""

import contextlib
import functools
import http.server
import threading
import time
from pathlib import Path


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves `directory`; files named in `truncated` are sent half, with
    their full Content-Length, then the connection closes; files named in
    `trickled` are sent one byte every `TRICKLE_S` (a server that never
    lets a read time out)."""

    truncated = frozenset()
    trickled = frozenset()
    requests = None  # list shared with the test: paths asked for

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):  # noqa: N802 - http.server's name
        self.requests.append(self.path)
        name = self.path.lstrip("/").split("?")[0]
        path = Path(self.directory) / name
        special = name in self.truncated or name in self.trickled
        if not special or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if name in self.truncated:
            self.wfile.write(data[: len(data) // 2])
        else:
            with contextlib.suppress(OSError):  # the client gave up
                for byte in data:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(TRICKLE_S)
        self.close_connection = True
        return None


TRICKLE_S = 0.2


@contextlib.contextmanager
def _running(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _PredictHandler(http.server.BaseHTTPRequestHandler):
    """Answers every POST with `answer(body text)` as application/json."""

    answer = None

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        data = type(self).answer(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def predicting(answer):
    """Yields the base URL of a server answering POSTs with `answer`."""
    handler = type(
        "Handler", (_PredictHandler,), {"answer": staticmethod(answer)}
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    with _running(server) as url:
        yield url


@contextlib.contextmanager
def serving(directory, *, truncated=(), trickled=()):
    """Yields (base URL, list of requested paths) while serving `directory`
    on a free port of 127.0.0.1; the server stops when the block ends."""
    requests = []
    handler = functools.partial(
        type(
            "Handler",
            (_Handler,),
            {
                "truncated": frozenset(truncated),
                "trickled": frozenset(trickled),
                "requests": requests,
            },
        ),
        directory=str(directory),
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    with _running(server) as url:
        yield url, requests


def closed_port_url(name="model.pth") -> str:
    """A URL nothing listens on: what a machine without network gets."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"
