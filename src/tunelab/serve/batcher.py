"""Dynamic micro-batching: concurrent `/v1/predict` requests run as one forward pass of at most `max_batch` inputs
(a request larger than that runs alone), on the event loop's thread (see `_run`). Each batch takes what queued up
while the previous one ran; under load (several requests at once) it also waits up to
`max_wait_ms` for more, while a lone request on an idle server runs at once. The queue is bounded (`max_queue`
inputs waiting): beyond it a request is refused at once (HTTP 503 with Retry-After), never left in an unbounded
backlog. TEI and Triton batch the same way."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """More inputs are waiting than the server takes; the client should retry later."""


@dataclass
class BatchStats:
    batches: int = 0
    inputs: int = 0
    sizes: list[int] = field(default_factory=list)  # the last 10,000 batch sizes (the load test's histogram)

    def add(self, size: int) -> None:
        self.batches += 1
        self.inputs += size
        self.sizes = [*self.sizes[-9_999:], size]


class MicroBatcher:
    """`await batcher.submit(items)` → `fn(items of several requests)[its slice]`."""

    def __init__(self, fn: Callable[[list[Any]], list[Any]], max_batch: int = 32, max_wait_ms: float = 5.0,
                 max_queue: int = 1024, on_batch: Callable[[int, float], None] | None = None) -> None:
        self.fn, self.max_batch, self.max_wait, self.max_queue = fn, max_batch, max_wait_ms / 1000, max_queue
        self.on_batch = on_batch
        self.waiting = 0  # inputs queued or running
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[list[Any], asyncio.Future[list[Any]]]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False  # the last batch held several requests: wait for company

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Finish what is queued, then stop (graceful shutdown)."""
        while self.waiting:
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()

    async def submit(self, items: list[Any]) -> list[Any]:
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        if self.waiting and self.waiting + len(items) > self.max_queue:
            raise QueueFull(f"{self.waiting} inputs are waiting (at most {self.max_queue})")
        self.waiting += len(items)
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put((items, future))
        try:
            return await future
        finally:
            self.waiting -= len(items)

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            group, size = [first], len(first[0])
            while size < self.max_batch and not self._queue.empty():  # what arrived while the last batch ran
                nxt = self._queue.get_nowait()
                group.append(nxt)
                size += len(nxt[0])
            # wait for company only under load (several requests now or in the last batch): a lone request on an
            # idle server goes at once instead of paying max_wait_ms
            deadline = loop.time() + (self.max_wait if len(group) > 1 or self._busy else 0)
            while size < self.max_batch:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
                group.append(nxt)
                size += len(nxt[0])
            self._busy = len(group) > 1
            items = [x for request, _ in group for x in request]
            start = time.perf_counter()
            try:
                # on the event loop's own thread: torch's OpenMP thread team belongs to the thread that created it, and
                # a second team (a worker thread's) made every forward pass ~2x slower on this project's CPUs; requests
                # that arrive meanwhile wait in the socket backlog and form the next batch
                results = self.fn(items)
            except Exception as exc:  # noqa: BLE001 - each waiting request gets the error
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.stats.add(len(items))
            if self.on_batch is not None:
                self.on_batch(len(items), time.perf_counter() - start)
            at = 0
            for request, future in group:
                if not future.done():
                    future.set_result(results[at : at + len(request)])
                at += len(request)
