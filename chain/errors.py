"""Errors of the chain-access layer.

Every failure to get a trustworthy answer from a node is a :class:`ChainRpcError`. Callers branch on the subclass:

- :class:`ChainUnreachableError`: no answer (connection refused or reset, timeout, HTTP 5xx, rate limited) after the
  client's retries. Try again later; nothing was learned. :class:`ChainTimeoutError` and
  :class:`ChainRateLimitedError` narrow it down.
- :class:`ChainRangeTooLargeError`: the node refused an ``eth_getLogs`` query as too large (block range, result
  count or response size). Ask for less.
- :class:`ChainResponseError`: any other JSON-RPC error, or a malformed answer.
- :class:`ChainIdMismatchError`: the endpoint serves another chain than the one configured.
- :class:`ChainInconsistentError`: the node's answers disagree with each other (typically a reorganisation under
  way between two calls); retry.
"""

from __future__ import annotations


class ChainRpcError(Exception):
    """A node could not give a trustworthy answer to ``method``."""

    def __init__(self, message: str, *, method: str | None = None, endpoint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.endpoint = endpoint

    def __str__(self) -> str:
        where = []
        if self.method:
            where.append(self.method)
        if self.endpoint:
            where.append(f"at {self.endpoint}")
        return f"{self.message} ({' '.join(where)})" if where else self.message


class ChainUnreachableError(ChainRpcError):
    """No answer from the node (connection, timeout, HTTP 5xx or rate limit) after retries."""


class ChainTimeoutError(ChainUnreachableError):
    """The node did not answer within the client's timeout."""


class ChainRateLimitedError(ChainUnreachableError):
    """The node kept answering "too many requests" (HTTP 429 or a rate-limit JSON-RPC error)."""


class ChainRangeTooLargeError(ChainRpcError):
    """The node refused an ``eth_getLogs`` query as too large: block range, number of results or response size."""


class ChainResponseError(ChainRpcError):
    """A JSON-RPC error the node returned, or an answer that does not have the expected shape."""

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        endpoint: str | None = None,
        code: int | None = None,
        data: object = None,
    ) -> None:
        super().__init__(message, method=method, endpoint=endpoint)
        self.code = code
        self.data = data


class ChainIdMismatchError(ChainRpcError):
    """The endpoint reports another chain id than the configured one."""

    def __init__(self, *, expected_chain_id: int, actual_chain_id: int, endpoint: str | None = None) -> None:
        super().__init__(
            f"the node serves chain {actual_chain_id}, expected chain {expected_chain_id}",
            method="eth_chainId",
            endpoint=endpoint,
        )
        self.expected_chain_id = expected_chain_id
        self.actual_chain_id = actual_chain_id


class ChainInconsistentError(ChainRpcError):
    """Two answers of the node contradict each other, as when the chain reorganises between calls."""
