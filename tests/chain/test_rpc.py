import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from chain.errors import (
    ChainIdMismatchError,
    ChainRangeTooLargeError,
    ChainRateLimitedError,
    ChainResponseError,
    ChainTimeoutError,
    ChainUnreachableError,
)
from chain.node import free_port
from chain.rpc import ChainRpc, RetryPolicy, classify_rpc_error, redact_url


class ScriptedServer:
    """A local HTTP server answering each POST with the next scripted (status, body) and recording requests."""

    def __init__(self, responses: list[tuple[int, Any]]) -> None:
        self.responses = list(responses)
        self.requests: list[Any] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                server.requests.append(json.loads(self.rfile.read(length)))
                status, body = server.responses.pop(0) if len(server.responses) > 1 else server.responses[0]
                payload = json.dumps(body).encode() if not isinstance(body, bytes) else body
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def rpc_error(code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 0, "error": {"code": code, "message": message}}


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_unreachable_node_raises_after_exponential_backoff():
    sleeps = Sleeps()
    policy = RetryPolicy(max_attempts=4, backoff_initial_seconds=0.1, backoff_multiplier=2, jitter=0)
    client = ChainRpc(f"http://127.0.0.1:{free_port()}", retry=policy, sleep=sleeps)
    with pytest.raises(ChainUnreachableError) as caught:
        client.block_number()
    assert sleeps == [0.1, 0.2, 0.4]
    assert "cannot reach the node" in str(caught.value)
    assert caught.value.method == "eth_blockNumber"


def test_backoff_is_capped_and_jitter_only_shortens():
    policy = RetryPolicy(backoff_initial_seconds=1, backoff_multiplier=3, backoff_max_seconds=5, jitter=0.5)
    for attempt, ceiling in [(0, 1), (1, 3), (2, 5), (7, 5)]:
        delay = policy.delay_seconds(attempt)
        assert ceiling * 0.5 <= delay <= ceiling


def test_timeout_is_retried_for_plain_calls_but_not_for_get_logs(silent_server):
    sleeps = Sleeps()
    client = ChainRpc(silent_server, timeout_seconds=0.2, retry=RetryPolicy(max_attempts=2, jitter=0), sleep=sleeps)
    with pytest.raises(ChainTimeoutError):
        client.block_number()
    assert len(sleeps) == 1
    sleeps.clear()
    with pytest.raises(ChainTimeoutError):
        client.get_logs(from_block=0, to_block=10)
    assert sleeps == []


def test_rate_limit_is_retried_then_succeeds():
    responses = [(429, b"slow down"), (200, {"jsonrpc": "2.0", "id": 0, "result": "0x2a"})]
    with ScriptedServer(responses) as server:
        sleeps = Sleeps()
        client = ChainRpc(server.url, retry=RetryPolicy(max_attempts=3, jitter=0), sleep=sleeps)
        assert client.block_number() == 42
        assert len(server.requests) == 2
        assert len(sleeps) == 1


def test_persistent_rate_limit_surfaces_as_rate_limited():
    with ScriptedServer([(200, rpc_error(-32005, "daily request count exceeded, request rate limited"))]) as server:
        client = ChainRpc(server.url, retry=RetryPolicy(max_attempts=2), sleep=Sleeps())
        with pytest.raises(ChainRateLimitedError):
            client.get_logs(from_block=0, to_block=100)
        assert len(server.requests) == 2


def test_http_503_is_unreachable_after_retries():
    with ScriptedServer([(503, b"<html>bad gateway</html>")]) as server:
        client = ChainRpc(server.url, retry=RetryPolicy(max_attempts=3), sleep=Sleeps())
        with pytest.raises(ChainUnreachableError, match="HTTP 503"):
            client.block_number()
        assert len(server.requests) == 3


def test_too_many_results_is_not_retried():
    with ScriptedServer([(200, rpc_error(-32005, "query returned more than 10000 results"))]) as server:
        client = ChainRpc(server.url, sleep=Sleeps())
        with pytest.raises(ChainRangeTooLargeError, match="more than 10000"):
            client.get_logs(from_block=0, to_block=100_000)
        assert len(server.requests) == 1
        assert server.requests[0]["params"][0] == {"fromBlock": "0x0", "toBlock": "0x186a0"}


def test_json_error_inside_an_http_error_status_is_classified():
    with ScriptedServer([(400, rpc_error(-32602, "block range is too wide"))]) as server:
        client = ChainRpc(server.url, sleep=Sleeps())
        with pytest.raises(ChainRangeTooLargeError):
            client.get_logs(from_block=0, to_block=100_000)


def test_malformed_answer_is_a_response_error():
    with ScriptedServer([(200, b"not json at all")]) as server:
        client = ChainRpc(server.url, sleep=Sleeps())
        with pytest.raises(ChainResponseError):
            client.block_number()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (-32005, "query returned more than 10000 results"),
        (-32602, "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range"),
        (-32000, "block range is too wide"),
        (-32000, "exceed maximum block range: 5000"),
        (-32600, "eth_getLogs is limited to a 10,000 range"),
        (-32000, "query timeout exceeded"),
        (-32000, "Please specify a smaller block range"),
        (-32011, "range is too large, max is 1k blocks"),
    ],
)
def test_provider_log_limit_messages_mean_range_too_large(code, message):
    assert isinstance(classify_rpc_error("eth_getLogs", code, message), ChainRangeTooLargeError)


@pytest.mark.parametrize(
    "message",
    [
        "block range extends beyond current head block",
        "invalid block range params",
        "header not found",
        "execution reverted: rate limit",
    ],
)
def test_errors_that_narrowing_cannot_fix_are_plain_response_errors(message):
    assert type(classify_rpc_error("eth_getLogs", -32000, message)) is ChainResponseError


def test_other_errors_are_response_errors_with_code():
    error = classify_rpc_error("eth_call", -32000, "execution reverted")
    assert type(error) is ChainResponseError
    assert error.code == -32000
    assert isinstance(classify_rpc_error("eth_call", 429, "Too Many Requests"), ChainRateLimitedError)


def test_unknown_method_on_a_real_node_is_a_response_error(rpc):
    with pytest.raises(ChainResponseError) as caught:
        rpc.request("eth_noSuchMethod")
    assert caught.value.code is not None


def test_chain_id_mismatch_is_refused(anvil):
    with pytest.raises(ChainIdMismatchError) as caught:
        ChainRpc(anvil.url, expected_chain_id=1).chain_id()
    assert caught.value.actual_chain_id == 31337


def test_block_hashes_in_batches_and_none_beyond_head(anvil):
    client = ChainRpc(anvil.url, batch_size=3)
    head = client.block_number()
    hashes = client.block_hashes(range(max(0, head - 6), head + 3))
    header = client.block_header(head)
    assert header is not None
    assert hashes[head] == header["hash"]
    assert hashes[head + 1] is None
    assert hashes[head + 2] is None
    assert all(value is not None and value.startswith("0x") for n, value in hashes.items() if n <= head)


def test_endpoint_in_messages_hides_the_api_key():
    assert redact_url("https://user:pw@base-mainnet.example/v2/SECRETKEY?x=1") == "https://base-mainnet.example/***"
    assert redact_url("http://127.0.0.1:8545") == "http://127.0.0.1:8545"
    error = ChainRpc("https://node.example/v2/SECRETKEY")
    assert "SECRETKEY" not in repr(error)
