"""A real S3 endpoint on 127.0.0.1 (moto's server) for the object-storage tests.

Use: `from tests.s3_fixtures import s3`, then the `s3` fixture gives an `S3` with the
endpoint, an empty bucket of the test's own, and the environment set so that fsspec/s3fs,
boto3, pyarrow and img2dataset (subprocesses included) reach it with the standard variables.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class S3:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str  # empty, created for the test

    def url(self, *parts: str) -> str:
        return "/".join([f"s3://{self.bucket}", *parts])

    def fs(self):
        import s3fs

        return s3fs.S3FileSystem(client_kwargs={"endpoint_url": self.endpoint})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3:
    """The endpoint through the standard AWS variables (also seen by subprocesses), a new bucket."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": s3_endpoint,  # boto3 ≥ 1.28, s3fs (via botocore) and the aws cli
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"miro-{uuid.uuid4().hex[:12]}"
    fs = S3(s3_endpoint, bucket).fs()
    fs.mkdir(bucket)
    return S3(s3_endpoint, bucket)
