"""Hostile requests against a real server process: they are answered with a 4xx, and the process lives on."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from chain.node import free_port
from services.apikeys.service import issue_key
from services.core.db import make_engine, unit_of_work
from services.core.migrate import upgrade
from services.ledger.accounts import create_customer_account

# Deep enough to overflow the C stack in json.loads once the recursion limit is raised (70,000 levels did).
DEEP = b"[" * 100_000 + b"]" * 100_000
MAX_BODY_BYTES = 1_048_576
DEADLINE_SECONDS = 30.0


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    customer_key: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.process.poll() is None and httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    database_url = f"sqlite:///{tmp_path / 'creditrail.db'}"
    engine = make_engine(database_url)
    upgrade(engine)
    with unit_of_work(engine) as session:
        account_id = create_customer_account(session, name="acme")
        key = issue_key(session, role="customer", account_id=account_id).key
    engine.dispose()
    port = free_port()
    env = {
        **os.environ,
        "CREDITRAIL_DATABASE_URL": database_url,
        "CREDITRAIL_ENVIRONMENT": "test",
        "CREDITRAIL_API_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    }
    command = [sys.executable, "-m", "services.cli", "run", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    started = Server(process, port, key)
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            assert process.poll() is None, "the server exited during start"
            try:
                if httpx.get(f"{started.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            select.select([], [], [], 0.05)  # a short pause between polls, not a timing assumption
        yield started
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _code(response: httpx.Response) -> str:
    return str(response.json()["error"]["code"])


def _raw_request(server: Server, head: str, body_chunks: Iterator[bytes] | None = None) -> tuple[int, dict[str, str]]:
    """Send ``head`` (request line and headers) and then body chunks until the server answers; returns the status
    and the error body's fields. Stops sending as soon as an answer is readable (or the server closes)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_SECONDS) as sock:
        sock.sendall(head.encode("latin-1"))
        deadline = time.monotonic() + DEADLINE_SECONDS
        for chunk in body_chunks or iter(()):
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            assert time.monotonic() < deadline
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < _length(answer):
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    head_bytes, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return status, json.loads(payload)["error"]


def _length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _chunks(total_bytes: int, size: int = 65_536) -> Iterator[bytes]:
    sent = 0
    while sent < total_bytes:
        piece = b"1" * size
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        sent += size
    yield b"0\r\n\r\n"


def test_deeply_nested_json_neither_crashes_nor_is_parsed(server: Server) -> None:
    headers = {"Content-Type": "application/json"}
    unauthenticated = httpx.post(f"{server.url}/v1/budgets", content=DEEP, headers=headers, timeout=30)
    assert unauthenticated.status_code == 401
    assert _code(unauthenticated) == "unauthenticated"
    assert server.alive()
    authenticated = httpx.post(
        f"{server.url}/v1/budgets",
        content=DEEP,
        headers={**headers, "Authorization": f"Bearer {server.customer_key}"},
        timeout=30,
    )
    assert authenticated.status_code == 422
    assert _code(authenticated) == "json_too_deep"
    assert server.alive()


def test_large_bodies_are_refused_before_they_are_read(server: Server) -> None:
    # 50 MB declared: 401 without a key, 413 with one, and no byte of the body sent either way.
    big = 50 * 1024 * 1024
    head = f"POST /v1/budgets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {big}\r\n"
    status, error = _raw_request(server, head + "\r\n")
    assert (status, error["code"]) == (401, "unauthenticated")
    status, error = _raw_request(server, head + f"Authorization: Bearer {server.customer_key}\r\n\r\n")
    assert (status, error["code"]) == (413, "payload_too_large")
    assert server.alive()


def test_chunked_bodies_are_cut_at_the_cap(server: Server) -> None:
    head = "POST /v1/charges HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    resident_before = psutil.Process(server.process.pid).memory_info().rss
    status, error = _raw_request(server, head + "\r\n", _chunks(64 * 1024 * 1024))
    assert (status, error["code"]) == (401, "unauthenticated")
    # Nothing of the 64 MiB offered was kept (300 MB once grew the process by 600 MB).
    assert psutil.Process(server.process.pid).memory_info().rss - resident_before < 32 * 1024 * 1024
    authorized = head + f"Authorization: Bearer {server.customer_key}\r\nIdempotency-Key: big\r\n\r\n"
    status, error = _raw_request(server, authorized, _chunks(64 * 1024 * 1024))
    assert (status, error["code"]) == (413, "payload_too_large")
    # A body just under the cap is read and judged on its merits.
    status, error = _raw_request(server, authorized, _chunks(MAX_BODY_BYTES - 65_536))
    assert (status, error["code"]) == (422, "malformed_json")
    assert server.alive()
