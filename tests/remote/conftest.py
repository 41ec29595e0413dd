"""An S3-compatible server (moto's, in server mode) started by the tests on a free loopback port.

Real HTTP requests from s3fs/botocore reach it; nothing is mocked. The server
runs on a thread in this process, serves 127.0.0.1 only, and is shut down at
the end of the session. A small WSGI wrapper records each request's method,
object path, ``Range`` header and the number of body bytes served, so tests
can check what a read fetched.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

# The test extra installs s3fs and moto[server]: these tests run, never skip.
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server


@dataclass
class Served:
    method: str
    path: str
    range: str | None
    nbytes: int


@dataclass
class S3Server:
    endpoint: str
    log: list[Served] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def reads(self, bucket: str) -> list[Served]:
        with self.lock:
            return [r for r in self.log if r.method == "GET" and r.path.startswith(f"/{bucket}/")]

    def clear(self) -> None:
        with self.lock:
            self.log.clear()


class _Counting:
    """WSGI middleware: records what each request was served."""

    def __init__(self, app: Any, server: S3Server) -> None:
        self.app, self.server = app, server

    def __call__(self, environ: dict, start_response: Any) -> Iterator[bytes]:
        n = 0
        try:
            for chunk in self.app(environ, start_response):
                n += len(chunk)
                yield chunk
        finally:
            with self.server.lock:
                self.server.log.append(Served(environ["REQUEST_METHOD"], environ["PATH_INFO"],
                                              environ.get("HTTP_RANGE"), n))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    app = DomainDispatcherApplication(create_backend_app)
    server = S3Server("")
    httpd = make_server("127.0.0.1", 0, _Counting(app, server), threaded=True)
    server.endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        thread.join(timeout=10)


_BUCKETS = itertools.count()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty bucket; returns its URL (``s3://bucket-N``). Credentials and the
    endpoint come from the environment, as a user's would."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"torchckpt-test-{next(_BUCKETS)}"
    fs = s3fs.S3FileSystem()
    fs.mkdir(bucket)
    s3_server.clear()
    yield f"s3://{bucket}"
    s3fs.S3FileSystem.clear_instance_cache()
