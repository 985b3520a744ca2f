"""Dynamic micro-batching: concurrent `/v1/predict` requests run as one forward pass of at most `max_batch` inputs
(a request larger than that runs alone) and at most `max_tokens` padded tokens (inputs × the longest one's tokens, by
`submit`'s count or `cost`; a request over it runs alone), on the event loop's thread (see `_run`). Each batch
takes what queued up while the previous one ran; under load (several requests at once) it also waits up to
`max_wait_ms` for more, while a lone request on an idle server runs at once. The queue is bounded (`max_queue`
inputs waiting): beyond it a request is refused at once (HTTP 503 with Retry-After), never left in an unbounded
backlog. TEI and Triton batch the same way. A batch that fails runs again request by request, so that one request's
bad input fails that request only; the batching task itself never dies of an input."""

from __future__ import annotations

import asyncio
import contextlib
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
                 max_queue: int = 1024, on_batch: Callable[[int, float], None] | None = None,
                 max_tokens: int | None = None, cost: Callable[[Any], int] | None = None) -> None:
        self.fn, self.max_batch, self.max_wait, self.max_queue = fn, max_batch, max_wait_ms / 1000, max_queue
        self.on_batch, self.max_tokens, self.cost = on_batch, max_tokens, cost
        self._held: tuple[list[Any], asyncio.Future[list[Any]], int] | None = None  # did not fit: opens the next batch
        self.waiting = 0  # inputs queued or running
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[list[Any], asyncio.Future[list[Any]], int]] | None = None
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

    async def submit(self, items: list[Any], longest: int | None = None) -> list[Any]:
        """`items`' results; `longest`: their longest input's tokens, when the caller has counted them (else `cost`
        counts them here, once per request)."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not awaited")
        if self.waiting and self.waiting + len(items) > self.max_queue:
            raise QueueFull(f"{self.waiting} inputs are waiting (at most {self.max_queue})")
        self.waiting += len(items)
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        await self._queue.put((items, future, self._longest(items) if longest is None else longest))
        try:
            return await future
        finally:
            self.waiting -= len(items)

    def _longest(self, items: list[Any]) -> int:
        try:
            return max((self.cost(x) for x in items), default=0) if self.cost and self.max_tokens else 0
        except Exception:  # noqa: BLE001 - a row the cost cannot read fails in `fn`, with its own request's error
            return 0

    async def _take(self, group: list[Any], size: int, longest: int, wait: float | None) -> tuple[int, int, bool]:
        """Add the next request to `group` if it fits (inputs and padded tokens); one that does not is held for the
        next batch. Returns (size, longest, whether to go on); `wait` None: only what is queued already."""
        assert self._queue is not None
        if wait is None:
            if self._queue.empty():
                return size, longest, False
            items, future, cost = self._queue.get_nowait()
        else:
            try:
                items, future, cost = await asyncio.wait_for(self._queue.get(), wait)
            except TimeoutError:
                return size, longest, False
        if size + len(items) > self.max_batch or (
                self.max_tokens and (size + len(items)) * max(longest, cost) > self.max_tokens):
            self._held = (items, future, cost)  # the next batch's first: this one stays within max_batch / max_tokens
            return size, longest, False
        group.append((items, future))
        return size + len(items), max(longest, cost), size + len(items) < self.max_batch

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            if self._held is not None:
                items, future, longest = self._held
                self._held = None
            else:
                items, future, longest = await self._queue.get()
            group, size, more = [(items, future)], len(items), len(items) < self.max_batch
            while more:  # what arrived while the last batch ran
                size, longest, more = await self._take(group, size, longest, None)
            # wait for company only under load (several requests now or in the last batch): a lone request on an
            # idle server goes at once instead of paying max_wait_ms
            deadline = loop.time() + (self.max_wait if len(group) > 1 or self._busy else 0)
            more = size < self.max_batch and self._held is None
            while more and (left := deadline - loop.time()) > 0:
                size, longest, more = await self._take(group, size, longest, left)
            self._busy = len(group) > 1
            items = [x for request, _ in group for x in request]
            start = time.perf_counter()
            try:
                # on the event loop's own thread: torch's OpenMP thread team belongs to the thread that created it, and
                # a second team (a worker thread's) made every forward pass ~2x slower on this project's CPUs; requests
                # that arrive meanwhile wait in the socket backlog and form the next batch
                results = self.fn(items)
            except Exception as exc:  # noqa: BLE001 - alone, a request gets its error; together, each runs alone
                self._failed(group, exc)
                continue
            self._answer(group, results, start, len(items))

    def _failed(self, group: list[tuple[list[Any], asyncio.Future[list[Any]]]], exc: Exception) -> None:
        if len(group) == 1:
            if not group[0][1].done():
                group[0][1].set_exception(exc)
            return
        for request, future in group:  # so that one request's bad row fails that request only
            if not future.done():  # a client gone meanwhile: not run again
                self._run_alone(request, future)

    def _run_alone(self, request: list[Any], future: asyncio.Future[list[Any]]) -> None:
        start = time.perf_counter()
        try:
            results = self.fn(request)
        except Exception as exc:  # noqa: BLE001 - this request's own error
            if not future.done():
                future.set_exception(exc)
            return
        self._answer([(request, future)], results, start, len(request))

    def _answer(self, group: list[tuple[list[Any], asyncio.Future[list[Any]]]], results: list[Any], start: float,
                size: int) -> None:
        """Each request of `group` its slice of `results`."""
        self.stats.add(size)
        if self.on_batch is not None:
            with contextlib.suppress(Exception):  # a metrics hook must not kill the batching task
                self.on_batch(size, time.perf_counter() - start)
        at = 0
        for request, future in group:
            if not future.done():
                future.set_result(results[at : at + len(request)])
            at += len(request)
