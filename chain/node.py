"""A local anvil node (from the project's ``node_modules``) for tests and development.

The node binds to 127.0.0.1 only, on a free port unless one is given, and is ready when it answers
``eth_chainId`` (polled, with a deadline). ``--slots-in-an-epoch 1`` makes ``safe`` and ``finalized`` trail
``latest`` by one and two blocks, so confirmation logic can be exercised on short chains.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import requests

ANVIL_ENV_VAR = "CREDITRAIL_ANVIL"
"""Overrides where the anvil binary is looked up."""
ANVIL_DEV_MNEMONIC = "test test test test test test test test test test test junk"
"""anvil's default, publicly known development mnemonic: its accounts hold test ether on every anvil."""
DEFAULT_CHAIN_ID = 31337
LOCALHOST = "127.0.0.1"


class AnvilError(RuntimeError):
    """anvil is missing, would not start, or did not become ready."""


def project_root() -> Path:
    """The directory holding ``package.json`` and ``node_modules`` (the parent of the ``chain`` package)."""
    return Path(__file__).resolve().parent.parent


def find_anvil(root: Path | None = None) -> Path:
    """The anvil binary: ``$CREDITRAIL_ANVIL``, else ``node_modules/.bin/anvil`` under the project, else ``PATH``."""
    override = os.environ.get(ANVIL_ENV_VAR)
    if override:
        path = Path(override)
        if not path.is_file():
            raise AnvilError(f"{ANVIL_ENV_VAR}={override} is not a file")
        return path
    base = root or project_root()
    for candidate in (
        base / "node_modules" / ".bin" / "anvil",
        base / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil",
    ):
        if candidate.is_file():
            return candidate
    found = shutil.which("anvil")
    if found:
        return Path(found)
    raise AnvilError("anvil not found: run `npm ci` at the project root (package.json pins it)")


def port_is_free(port: int, host: str = LOCALHOST) -> bool:
    """Whether nothing listens on ``port`` (a server could bind it now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port nobody listens on right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class AnvilNode:
    """One anvil process. Use as a context manager, or call :meth:`start` and :meth:`stop`.

    ``state_path`` makes anvil load its chain from that file at start and dump it there at stop, so a stopped node
    can be restarted with its blocks, hashes and logs intact (the port is kept across restarts).
    """

    def __init__(
        self,
        *,
        chain_id: int = DEFAULT_CHAIN_ID,
        port: int | None = None,
        slots_in_an_epoch: int | None = 1,
        block_time_seconds: int | None = None,
        state_path: Path | None = None,
        extra_args: Sequence[str] = (),
        anvil_path: Path | None = None,
        start_timeout_seconds: float = 20.0,
    ) -> None:
        self.chain_id = chain_id
        self.port = port
        self.slots_in_an_epoch = slots_in_an_epoch
        self.block_time_seconds = block_time_seconds
        self.state_path = state_path
        self.extra_args = tuple(extra_args)
        self.anvil_path = anvil_path
        self.start_timeout_seconds = start_timeout_seconds
        self._process: subprocess.Popen[bytes] | None = None
        self._log_dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise AnvilError("the node has not been started")
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def command(self) -> list[str]:
        if self.port is None:
            raise AnvilError("no port chosen")
        args = [
            str(self.anvil_path or find_anvil()),
            "--host",
            LOCALHOST,
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
        ]
        if self.slots_in_an_epoch is not None:
            args += ["--slots-in-an-epoch", str(self.slots_in_an_epoch)]
        if self.block_time_seconds is not None:
            args += ["--block-time", str(self.block_time_seconds)]
        if self.state_path is not None:
            args += ["--state", str(self.state_path)]
        return args + list(self.extra_args)

    def start(self) -> AnvilNode:
        """Start anvil and wait until it answers; a port taken in the meantime is retried on another free port."""
        if self.running:
            return self
        fixed_port = self.port is not None
        last_error: AnvilError | None = None
        for _ in range(1 if fixed_port else 3):
            if not fixed_port:
                self.port = free_port()
            elif self.port is not None and not port_is_free(self.port):
                raise AnvilError(f"port {self.port} on {LOCALHOST} is already in use")
            try:
                self._spawn_and_wait()
                return self
            except AnvilError as exc:
                last_error = exc
                self._terminate()
        assert last_error is not None
        raise last_error

    def _spawn_and_wait(self) -> None:
        if self._log_dir is None:
            self._log_dir = tempfile.TemporaryDirectory(prefix="anvil-")
        log_path = Path(self._log_dir.name) / "anvil.log"
        with log_path.open("ab") as log:
            self._process = subprocess.Popen(  # noqa: S603 - fixed argument list, no shell
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + self.start_timeout_seconds
        delay = 0.01
        with requests.Session() as session:
            while True:
                if self._process.poll() is not None:
                    raise AnvilError(f"anvil exited with {self._process.returncode}: {self._log_tail(log_path)}")
                if self._answers_chain_id(session):
                    return
                if time.monotonic() >= deadline:
                    raise AnvilError(
                        f"anvil did not answer within {self.start_timeout_seconds:g} s: {self._log_tail(log_path)}"
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _answers_chain_id(self, session: requests.Session) -> bool:
        try:
            response = session.post(
                self.url, json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}, timeout=1.0
            )
            body = response.json()
        except (requests.RequestException, ValueError):
            return False
        result = body.get("result") if isinstance(body, dict) else None
        if not isinstance(result, str):
            return False
        if int(result, 16) != self.chain_id:
            raise AnvilError(f"the node on port {self.port} serves chain {int(result, 16)}, not {self.chain_id}")
        return True

    def stop(self, timeout_seconds: float = 10.0) -> None:
        """Stop anvil (SIGTERM, then SIGKILL after ``timeout_seconds``); with ``state_path``, it dumps its state."""
        self._terminate(timeout_seconds)

    def _terminate(self, timeout_seconds: float = 10.0) -> None:
        process = self._process
        self._process = None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_seconds)

    def restart(self) -> AnvilNode:
        """Stop and start again on the same port."""
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._log_dir is not None:
            self._log_dir.cleanup()
            self._log_dir = None

    def log_text(self) -> str:
        """What anvil printed so far."""
        if self._log_dir is None:
            return ""
        path = Path(self._log_dir.name) / "anvil.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @staticmethod
    def _log_tail(path: Path, lines: int = 15) -> str:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def __enter__(self) -> AnvilNode:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
