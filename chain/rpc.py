"""A JSON-RPC client for one EVM chain: timeouts, retries with exponential backoff, and classified errors.

Calls go straight to the node over a requests session (one per thread) and return the node's JSON as plain dicts,
without web3's per-item result formatting (about ten times slower on large log sets) or its provider's per-call
work (reading the proxy settings from the environment again on every call, among others). Everything else may use
:attr:`ChainRpc.web3`, a ``Web3`` on an HTTP provider of the same node.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import random
import re
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, cast
from urllib.parse import urlsplit

import requests
from web3 import Web3
from web3.middleware import ExtraDataToPOAMiddleware
from web3.providers.rpc import HTTPProvider

from chain.errors import (
    ChainIdMismatchError,
    ChainRangeTooLargeError,
    ChainRateLimitedError,
    ChainResponseError,
    ChainRpcError,
    ChainTimeoutError,
    ChainUnreachableError,
)

BlockTag = Literal["latest", "safe", "finalized"]
RawLog = dict[str, Any]
Topic = str | Sequence[str] | None

_RATE_LIMIT_RE = re.compile(
    r"rate.?limit|too many requests|\brate\b|requests per second|request limit|compute units|capacity|throughput",
    re.IGNORECASE,
)
_LOGS_TOO_LARGE_RE = re.compile(
    r"more than \d|too many|range|limit exceeded|response size|size exceeded|too large|too big|too wide"
    r"|max(imum)?\s*(results|logs|blocks?)|exceed|smaller|timeout|timed out|10,?000",
    re.IGNORECASE,
)
_NOT_A_SIZE_LIMIT_RE = re.compile(
    r"revert|beyond (the )?(current )?head|invalid block range|unknown block|header not found|block not found",
    re.IGNORECASE,
)
_RETRYABLE_HTTP_STATUSES = frozenset({408, 425, 500, 502, 503, 504})
_USER_AGENT = "creditrail-chain-rpc"
_DECIMALS_SELECTOR = "0x313ce567"  # decimals()


@dataclass(frozen=True)
class RetryPolicy:
    """Retries of transient failures (no connection, timeout, HTTP 5xx, rate limit) with exponential backoff.

    Attempt ``n`` (0-based) that fails waits ``min(max, initial * multiplier**n)`` seconds, less up to ``jitter`` of
    it at random, before the next one. ``max_attempts`` counts the first try.
    """

    max_attempts: int = 4
    backoff_initial_seconds: float = 0.25
    backoff_multiplier: float = 2.0
    backoff_max_seconds: float = 4.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay_seconds(self, attempt: int, rng: random.Random | None = None) -> float:
        base = min(self.backoff_max_seconds, self.backoff_initial_seconds * self.backoff_multiplier**attempt)
        spread = (rng or random).random() * self.jitter
        return base * (1.0 - spread)


NO_RETRY = RetryPolicy(max_attempts=1)


def redact_url(url: str) -> str:
    """``url`` as ``scheme://host[:port]``, with ``/***`` in place of any credentials, path or query (an RPC URL
    often carries its API key there), for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    hidden = "/***" if parts.path.strip("/") or parts.query or parts.username or parts.password else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


def scrub_url(text: str, url: str) -> str:
    """``text`` (an HTTP library's error message, say) with every secret-bearing part of ``url`` in it (the whole
    URL, its path, query and credentials) replaced by ``***``."""
    parts = urlsplit(url)
    secrets = [url, url.rstrip("/")]
    if parts.path.strip("/"):
        secrets += [f"{parts.path}?{parts.query}" if parts.query else parts.path, parts.path]
    secrets += [part for part in (parts.query, parts.username, parts.password) if part]
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


class _ScrubRpcUrls(logging.Filter):
    """Hides the RPC URLs' secret parts (:func:`scrub_url`) in the HTTP library's own log lines (urllib3 names the
    path and query of every request it makes at DEBUG level, and of the retries it counts)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()
        self._lock = threading.Lock()

    def add(self, url: str) -> None:
        if redact_url(url) != url:
            with self._lock:
                self.urls.add(url)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.urls:
            return True
        message = record.getMessage()
        scrubbed = message
        for url in list(self.urls):
            scrubbed = scrub_url(scrubbed, url)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


_URL_SCRUBBER = _ScrubRpcUrls()
for _name in ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry", "urllib3.poolmanager"):
    logging.getLogger(_name).addFilter(_URL_SCRUBBER)


def classify_rpc_error(
    method: str, code: int | None, message: str, *, data: object = None, endpoint: str | None = None
) -> ChainRpcError:
    """Map a JSON-RPC error object to the error hierarchy.

    Providers word their limits differently ("query returned more than 10000 results", "block range is too wide",
    "Log response size exceeded", "exceed maximum block range: 5000", ...); for ``eth_getLogs`` all of them, and a
    query timeout, mean "ask for less". Rate limits are transient. Anything else is a plain response error.
    """
    text = message if data is None else f"{message} {data}"
    if _NOT_A_SIZE_LIMIT_RE.search(text):
        return ChainResponseError(message, method=method, endpoint=endpoint, code=code, data=data)
    if code == 429 or _RATE_LIMIT_RE.search(text):
        return ChainRateLimitedError(f"rate limited: {message}", method=method, endpoint=endpoint)
    if method == "eth_getLogs" and (code == -32005 or _LOGS_TOO_LARGE_RE.search(text)):
        return ChainRangeTooLargeError(f"log query refused as too large: {message}", method=method, endpoint=endpoint)
    return ChainResponseError(message, method=method, endpoint=endpoint, code=code, data=data)


class ChainReader(Protocol):
    """What the scanner and the reorganisation check need from a node (:class:`ChainRpc`, or a test double)."""

    def chain_id(self) -> int: ...

    def block_number(self, tag: BlockTag = "latest") -> int: ...

    def block_hashes(self, numbers: Iterable[int]) -> dict[int, str | None]: ...

    def get_logs(
        self,
        *,
        from_block: int,
        to_block: int,
        address: str | Sequence[str] | None = None,
        topics: Sequence[Topic] = (),
    ) -> list[RawLog]: ...


class ReceiptReader(ChainReader, Protocol):
    """A ChainReader that also reads a transaction's receipt (to observe one transaction rather than scan)."""

    def transaction_receipt(self, tx_hash: str) -> dict[str, Any] | None: ...


class ChainRpc:
    """A JSON-RPC client for one chain's HTTP endpoint.

    Thread-safe for concurrent calls (one HTTP session per thread).
    """

    def __init__(
        self,
        url: str,
        *,
        expected_chain_id: int | None = None,
        timeout_seconds: float = 10.0,
        connect_timeout_seconds: float = 3.0,
        retry: RetryPolicy | None = None,
        batch_size: int = 50,
        poa: bool = False,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.url = url
        self.endpoint = redact_url(url)
        _URL_SCRUBBER.add(url)
        self.expected_chain_id = expected_chain_id
        self.timeout_seconds = timeout_seconds
        self.retry = retry or RetryPolicy()
        self.batch_size = batch_size
        self._sleep = sleep
        self._timeouts = (connect_timeout_seconds, timeout_seconds)
        self._provider: HTTPProvider | None = None
        self._poa = poa
        self._web3: Web3 | None = None
        self._chain_id: int | None = None
        # The JSON-RPC calls go through one requests session per thread. What requests reads from the environment
        # (proxies and no_proxy, CA bundle, .netrc) is read once here, not on every call.
        self._environment = requests.Session().merge_environment_settings(url, {}, None, None, None)
        self._netrc_auth = requests.utils.get_netrc_auth(url)
        self._local = threading.local()
        # For close(): a thread's session goes with the thread (only its thread-local holds it strongly).
        self._sessions: weakref.WeakSet[requests.Session] = weakref.WeakSet()
        self._sessions_lock = threading.Lock()
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        return f"ChainRpc({self.endpoint!r}, expected_chain_id={self.expected_chain_id})"

    @property
    def web3(self) -> Web3:
        """A ``Web3`` on this client's provider (its calls bypass this client's retries and error mapping)."""
        if self._web3 is None:
            if self._provider is None:
                self._provider = HTTPProvider(
                    self.url, request_kwargs={"timeout": self._timeouts}, exception_retry_configuration=None
                )
            w3 = Web3(self._provider)
            if self._poa:
                w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
            self._web3 = w3
        return self._web3

    # ---- raw JSON-RPC ----

    def request(self, method: str, params: Sequence[Any] = (), *, retry_timeouts: bool = True) -> Any:
        """Call ``method`` and return its ``result``; retries transient failures per :attr:`retry`.

        With ``retry_timeouts=False`` a timeout is raised at once (the caller will ask for less instead).
        """
        return self._with_retries(method, lambda: self._request_once(method, list(params)), retry_timeouts)

    def batch_request(self, calls: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Results of several calls, sent as JSON-RPC batches of at most :attr:`batch_size` calls each."""
        results: list[Any] = []
        for start in range(0, len(calls), self.batch_size):
            chunk = [(method, list(params)) for method, params in calls[start : start + self.batch_size]]
            label = chunk[0][0] if len({method for method, _ in chunk}) == 1 else "batch"
            results.extend(self._with_retries(label, functools.partial(self._batch_once, chunk), True))
        return results

    def _with_retries(self, method: str, call: Callable[[], Any], retry_timeouts: bool) -> Any:
        attempt = 0
        while True:
            try:
                return call()
            except ChainUnreachableError as exc:
                if isinstance(exc, ChainTimeoutError) and not retry_timeouts:
                    raise
                attempt += 1
                if attempt >= self.retry.max_attempts:
                    raise
                self._sleep(self.retry.delay_seconds(attempt - 1))

    def _post(self, method: str, send: Callable[[], Any]) -> Any:
        try:
            return send()
        # The HTTP library's errors name the URL (which may carry the provider's key): their text is scrubbed, and
        # they are not chained to what is raised (a logged traceback would print them).
        except requests.Timeout:
            error: ChainRpcError = ChainTimeoutError(
                f"no answer within {self.timeout_seconds:g} s", method=method, endpoint=self.endpoint
            )
            raise error from None
        except requests.HTTPError as exc:
            error = self._http_error(method, exc)
            raise error from None
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError, OSError) as exc:
            error = ChainUnreachableError(
                f"cannot reach the node: {_short(scrub_url(str(exc), self.url))}", method=method, endpoint=self.endpoint
            )
            raise error from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise ChainResponseError(
                f"the node's answer is not JSON: {_short(scrub_url(str(exc), self.url))}",
                method=method,
                endpoint=self.endpoint,
            ) from None

    def _http_error(self, method: str, exc: requests.HTTPError) -> ChainRpcError:
        response = exc.response
        status = response.status_code if response is not None else None
        body: Any = None
        if response is not None:
            try:
                body = response.json()
            except ValueError:
                body = None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = self._error_from_payload(method, body["error"])
            if status in _RETRYABLE_HTTP_STATUSES and type(error) is ChainResponseError:
                return ChainUnreachableError(f"HTTP {status}: {error.message}", method=method, endpoint=self.endpoint)
            return error
        if status == 429:
            return ChainRateLimitedError("HTTP 429 too many requests", method=method, endpoint=self.endpoint)
        if status == 413 and method == "eth_getLogs":
            return ChainRangeTooLargeError("HTTP 413 response too large", method=method, endpoint=self.endpoint)
        if status in _RETRYABLE_HTTP_STATUSES or (status is not None and status >= 500):
            return ChainUnreachableError(f"HTTP {status}", method=method, endpoint=self.endpoint)
        return ChainResponseError(f"HTTP {status}", method=method, endpoint=self.endpoint, code=status)

    def _error_from_payload(self, method: str, payload: Mapping[str, Any]) -> ChainRpcError:
        code = payload.get("code")
        return classify_rpc_error(
            method,
            code if isinstance(code, int) else None,
            str(payload.get("message", "")),
            data=payload.get("data"),
            endpoint=self.endpoint,
        )

    def _result(self, method: str, response: Any) -> Any:
        if not isinstance(response, dict):
            raise ChainResponseError(
                "the node's answer is not a JSON-RPC object", method=method, endpoint=self.endpoint
            )
        if "error" in response and response["error"] is not None:
            raise self._error_from_payload(method, response["error"])
        if "result" not in response:
            raise ChainResponseError("the node's answer has no result", method=method, endpoint=self.endpoint)
        return response["result"]

    def _session(self) -> requests.Session:
        """This thread's HTTP session (a requests session is not meant to be shared between threads)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # read once, in __init__
            session.proxies.update(self._environment["proxies"])
            session.verify = self._environment["verify"]
            session.cert = self._environment["cert"]
            session.auth = self._netrc_auth
            session.headers.update({"Content-Type": "application/json", "User-Agent": _USER_AGENT})
            self._local.session = session
            with self._sessions_lock:
                self._sessions.add(session)
        return session

    def _post_json(self, body: Any) -> Any:
        """POST ``body`` as JSON and parse the answer (an HTTP error status raises ``requests.HTTPError``)."""
        data = json.dumps(body, separators=(",", ":"), default=_json_default).encode()
        with self._session().post(self.url, data=data, timeout=self._timeouts) as response:
            response.raise_for_status()
            return json.loads(response.content)

    def _call(self, method: str, params: list[Any]) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "method": method, "params": params, "id": next(self._ids)}

    def _request_once(self, method: str, params: list[Any]) -> Any:
        response = self._post(method, lambda: self._post_json(self._call(method, params)))
        return self._result(method, response)

    def _batch_once(self, chunk: list[tuple[str, list[Any]]]) -> list[Any]:
        label = chunk[0][0]
        calls = [self._call(method, params) for method, params in chunk]
        responses = self._post(label, lambda: self._post_json(calls))
        if not isinstance(responses, list):
            # A node that does not take batches answers with one error object.
            self._result(label, responses)
            raise ChainResponseError("the node answered a batch with one object", method=label, endpoint=self.endpoint)
        if len(responses) != len(chunk):
            raise ChainResponseError(
                f"the node answered {len(responses)} of {len(chunk)} batched calls",
                method=label,
                endpoint=self.endpoint,
            )
        # Answers may come in any order: each is matched to its call by id.
        by_id = {answer.get("id"): answer for answer in responses if isinstance(answer, dict)}
        try:
            responses = [by_id[call["id"]] for call in calls]
        except KeyError:
            raise ChainResponseError(
                "the node's batch answers do not match the calls", method=label, endpoint=self.endpoint
            ) from None
        return [self._result(method, response) for (method, _), response in zip(chunk, responses, strict=True)]

    # ---- typed helpers ----

    def chain_id(self) -> int:
        """The node's chain id (asked once, then remembered); checked against ``expected_chain_id`` if set."""
        if self._chain_id is None:
            actual = _hex_int(self.request("eth_chainId"), "eth_chainId")
            if self.expected_chain_id is not None and actual != self.expected_chain_id:
                raise ChainIdMismatchError(
                    expected_chain_id=self.expected_chain_id, actual_chain_id=actual, endpoint=self.endpoint
                )
            self._chain_id = actual
        return self._chain_id

    def block_number(self, tag: BlockTag = "latest") -> int:
        """The number of the ``latest``, ``safe`` or ``finalized`` block."""
        if tag == "latest":
            return _hex_int(self.request("eth_blockNumber"), "eth_blockNumber")
        header = self.request("eth_getBlockByNumber", [tag, False])
        if not isinstance(header, dict) or header.get("number") is None:
            raise ChainResponseError(
                f"the node has no {tag!r} block", method="eth_getBlockByNumber", endpoint=self.endpoint
            )
        return _hex_int(header["number"], "eth_getBlockByNumber")

    def block_header(self, block: int | BlockTag) -> dict[str, Any] | None:
        """The raw header of a block (``number``, ``hash``, ``parentHash``, ...), or ``None`` if the node lacks it."""
        ref = hex(block) if isinstance(block, int) else block
        header = self.request("eth_getBlockByNumber", [ref, False])
        return cast(dict[str, Any], header) if isinstance(header, dict) else None

    def block_hashes(self, numbers: Iterable[int]) -> dict[int, str | None]:
        """Canonical hash (lowercase hex) of each block number, ``None`` for blocks the node does not have yet."""
        wanted = sorted(set(numbers))
        headers = self.batch_request([("eth_getBlockByNumber", [hex(number), False]) for number in wanted])
        hashes: dict[int, str | None] = {}
        for number, header in zip(wanted, headers, strict=True):
            if isinstance(header, dict) and isinstance(header.get("hash"), str):
                if _hex_int(header.get("number"), "eth_getBlockByNumber") != number:
                    raise ChainResponseError(
                        f"asked for block {number}, got another", method="eth_getBlockByNumber", endpoint=self.endpoint
                    )
                hashes[number] = str(header["hash"]).lower()
            else:
                hashes[number] = None
        return hashes

    def get_logs(
        self,
        *,
        from_block: int,
        to_block: int,
        address: str | Sequence[str] | None = None,
        topics: Sequence[Topic] = (),
    ) -> list[RawLog]:
        """Raw ``eth_getLogs`` over blocks ``from_block..to_block`` inclusive, as the node's JSON dicts.

        Timeouts are not retried: a query that times out should be narrowed (the scanner halves its range).
        """
        if from_block > to_block:
            raise ValueError(f"empty block range {from_block}..{to_block}")
        query: dict[str, Any] = {"fromBlock": hex(from_block), "toBlock": hex(to_block)}
        if address is not None:
            query["address"] = address if isinstance(address, str) else list(address)
        if topics:
            query["topics"] = [topic if topic is None or isinstance(topic, str) else list(topic) for topic in topics]
        result = self.request("eth_getLogs", [query], retry_timeouts=False)
        if not isinstance(result, list):
            raise ChainResponseError("eth_getLogs did not answer a list", method="eth_getLogs", endpoint=self.endpoint)
        return cast(list[RawLog], result)

    def transaction_receipt(self, tx_hash: str) -> dict[str, Any] | None:
        """The raw receipt of a transaction (``status``, ``blockNumber``, ``blockHash``, ``logs`` ...), or ``None``
        while the node knows no mined transaction of that hash (unknown, or still pending)."""
        receipt = self.request("eth_getTransactionReceipt", [tx_hash])
        if receipt is None:
            return None
        if not isinstance(receipt, dict):
            raise ChainResponseError(
                "eth_getTransactionReceipt did not answer an object",
                method="eth_getTransactionReceipt",
                endpoint=self.endpoint,
            )
        return cast(dict[str, Any], receipt)

    def token_decimals(self, token: str) -> int:
        """An ERC-20 contract's ``decimals()`` at the latest block; a :class:`ChainResponseError` when the address
        answers no such thing (no code there, or not a token)."""
        answer = self.request("eth_call", [{"to": token, "data": _DECIMALS_SELECTOR}, "latest"])
        if not isinstance(answer, str) or len(answer) != 66:
            raise ChainResponseError(
                f"{token} answers no decimals() (not an ERC-20 contract?)", method="eth_call", endpoint=self.endpoint
            )
        return _hex_int(answer, "eth_call")

    def close(self) -> None:
        """Close the HTTP sessions (best effort)."""
        with self._sessions_lock:
            sessions = list(self._sessions)
        for own in sessions:
            own.close()
        manager = getattr(self._provider, "_request_session_manager", None)
        cache = getattr(manager, "session_cache", None)
        if cache is not None:
            for session in list(getattr(cache, "_data", {}).values()):
                if isinstance(session, requests.Session):
                    session.close()


def _json_default(value: Any) -> Any:
    """Bytes in JSON-RPC parameters (a signed transaction, say) as 0x hex, as web3 sends them."""
    if isinstance(value, bytes | bytearray | memoryview):
        return "0x" + bytes(value).hex()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _hex_int(value: Any, method: str) -> int:
    if isinstance(value, str):
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise ChainResponseError(f"expected a hex quantity, got {json.dumps(value)[:80]}", method=method)


def _short(exc: BaseException | str) -> str:
    text = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    return text if len(text) <= 200 else text[:197] + "..."
