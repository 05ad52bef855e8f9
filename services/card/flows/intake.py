"""Storing verified webhook events in batches (group commit), before they are acknowledged.

Each webhook request verifies its event's signature and parses it, then hands it to the :class:`InboxWriter` and
waits. One writer thread takes whatever events have queued up (up to ``batch_size``) and stores them all in one
unit of work: one multi-row INSERT and one commit for the batch instead of one each. Each request learns its
event's receipt only after that commit, and only then answers 2xx: an event is stored (once, by its id) before it
is acknowledged, as before. Under light load a batch is one event, and this costs what storing it in the request
did; under load the commits (and the round trips) are shared.

Should a batch fail as a whole, each of its events is stored on its own, so that one bad event fails its own
request alone (Stripe then delivers it again). When the queue is full, :meth:`InboxWriter.submit` says so and the
caller stores the event itself.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

from sqlalchemy.engine import Engine

from services.card.stripe_objects import EventData
from services.card.webhooks import Receipt, store_event, store_events
from services.core.clock import utcnow
from services.core.db import unit_of_work
from services.core.settings import Settings

log = logging.getLogger("creditrail.card.intake")

_Item = tuple[EventData, str, "Future[Receipt]"]


class InboxWriter:
    """Stores the events handed to it in batches, on a thread of its own; see the module's docstring."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        source: str = "webhook",
        batch_size: int = 64,
        capacity: int = 10_000,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.source = source
        self.batch_size = batch_size
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="card-inbox-writer", daemon=True)
        self._thread.start()

    def submit(self, event: EventData, payload: str) -> Future[Receipt] | None:
        """Queue a verified event for storing; its future resolves once it is committed (or fails). None when the
        queue is full or the writer has stopped: the caller stores the event itself."""
        if not self._thread.is_alive():
            return None
        future: Future[Receipt] = Future()
        try:
            self._queue.put_nowait((event, payload, future))
        except queue.Full:
            return None
        return future

    def close(self) -> None:
        """Store what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.batch_size and batch[-1] is not None:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            items = [item for item in batch if item is not None]
            if items:
                self.store(items)
            if len(items) < len(batch):
                return

    def store(self, items: list[_Item]) -> None:
        """Store ``items`` in one unit of work and resolve their futures; on failure, each on its own."""
        try:
            with unit_of_work(self.engine) as session:
                receipts = store_events(
                    session,
                    [(event, payload) for event, payload, _future in items],
                    source=self.source,
                    now=utcnow(),
                    settings=self.settings,
                )
        except Exception:
            log.warning("storing %s stripe events together failed; storing each alone", len(items), exc_info=True)
            for item in items:
                self._store_one(*item)
            return
        for (_event, _payload, future), receipt in zip(items, receipts, strict=True):
            future.set_result(receipt)

    def _store_one(self, event: EventData, payload: str, future: Future[Receipt]) -> None:
        try:
            with unit_of_work(self.engine) as session:
                receipt = store_event(session, event, payload, source=self.source, now=utcnow(), settings=self.settings)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(receipt)
