"""Batched generation for concurrent chat / completion requests of one model: requests that arrive while a batch is
generating (or within `max_wait_ms` of each other under load) and share their sampling settings are left-padded into
one `generate()` call, and each row's tokens stream to its own request as they come. This is static batching — a
batch runs until its longest reply ends, and a request arriving meanwhile waits for the next batch — not the
continuous batching of vLLM / TGI, which would also need paged attention; on a CPU it already puts several sequences
in each forward pass, where LLaMA-Factory's HF engine answers one request at a time.

Two kinds of request never share a batch: a sampling request with its own `seed` runs alone (rows of one batch draw
from one random stream, so its reply would depend on what else was in flight; a batch of unseeded rows draws a fresh
seed of its own, so no batch replays another's draws), and on a model with learned positions
(GPT-2, OPT) rows join only while the batch's longest prompt plus its longest reply fits the position table (the
batch is as wide as both together; past the table the embedding has no row)."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from tunelab.models.generate import generate_ids
from tunelab.serve.batcher import QueueFull
from tunelab.tasks.generation import GenerationConfig, generate_kwargs, position_limit

# torch's one random generator, which every served model's sampling draws from: a seeded batch holds it from its
# seed to its last token, or another model's sampling (another batcher's thread, an adapter over the same base)
# drew in between and the seed's reply depended on that traffic
SAMPLING = threading.Lock()


@dataclass
class Job:
    ids: list[int]
    cfg: GenerationConfig
    emit: Callable[[str], None]  # called from the generating thread with each new piece of text
    stopped: threading.Event  # set by the request (a stop string appeared, the client left): its row ends there
    tokens: list[int] = field(default_factory=list)
    text: str = ""
    done: bool = False
    finish: str = "stop"
    seeded: bool = False  # the request named its seed (`cfg.seed`): sampled, it runs alone (reproducible whatever is
    # in flight); unseeded, its batch draws a fresh seed
    keep: frozenset[int] = frozenset()  # special tokens its text keeps (a tool call's tags), where it drops the others

    def key(self) -> tuple[Any, ...]:
        """Jobs of one key may share a batch: the same sampling settings; a seeded sampling job shares with none."""
        c = self.cfg
        return (c.do_sample, c.temperature, c.top_p, id(self) if c.do_sample and self.seeded else None)


class _Rows(BaseStreamer):
    """Splits generate()'s per-step tokens (one per row) to the rows' jobs, decoding each row incrementally."""

    def __init__(self, jobs: list[Job], tokenizer: Any, stop: list[int]) -> None:
        self.jobs, self.tokenizer, self.stop, self.prompt_seen = jobs, tokenizer, set(stop), False
        self.special: set[int] | None = None  # the special tokens a reply's text leaves out: `_text`, once

    def _text(self, job: Job) -> str:
        """The job's reply so far, special tokens left out — but those of `job.keep`."""
        if not job.keep:
            return self.tokenizer.decode(job.tokens, skip_special_tokens=True)
        if self.special is None:  # what skip_special_tokens drops: the named ones and added tokens marked special
            tok = self.tokenizer
            self.special = set(tok.all_special_ids) | {i for i, t in tok.added_tokens_decoder.items() if t.special}
        return self.tokenizer.decode([t for t in job.tokens if t in job.keep or t not in self.special])

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # the first call carries the prompts
            self.prompt_seen = True
            return
        for job, token in zip(self.jobs, value.reshape(len(self.jobs), -1)[:, -1].tolist(), strict=True):
            if job.done or job.stopped.is_set():  # (a request that ended its row: no more tokens counted)
                job.done = True
                continue
            if token in self.stop:
                job.tokens.append(token)
                job.done = True
                continue
            job.tokens.append(token)
            text = self._text(job)
            if not text.endswith("\ufffd"):  # a character still incomplete: wait for its other bytes
                if not job.stopped.is_set():
                    job.emit(text[len(job.text):])
                job.text = text
            if job.stopped.is_set():  # this token's text held a stop string (emit said so)
                job.done = True
            elif len(job.tokens) >= job.cfg.max_new_tokens:
                job.done, job.finish = True, "length"

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        """generate()'s stopping criterion: every row done (its stop token, its length, a stop string, its client
        gone) ends the call, though no row reached a stop token."""
        return torch.full((input_ids.shape[0],), all(j.done or j.stopped.is_set() for j in self.jobs),
                          dtype=torch.bool, device=input_ids.device)

    def end(self) -> None:
        for job in self.jobs:
            if not job.done and job.tokens:
                text = self._text(job)
                if text != job.text and not job.stopped.is_set():
                    job.emit(text[len(job.text):])
                job.text = text
            job.done = True


class ChatBatcher:
    """`await batcher.submit(job)` → the job, its reply streamed through `job.emit` meanwhile."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, stop: list[int], max_batch: int = 8,
                 max_wait_ms: float = 10.0, max_queue: int = 1024) -> None:
        self.model, self.tokenizer, self.stop = model, tokenizer, stop
        self.max_batch, self.max_wait, self.max_queue = max_batch, max_wait_ms / 1000, max_queue
        self.pending: list[tuple[Job, asyncio.Future[Job]]] = []
        self.running = False
        self.sizes: list[int] = []
        self.limit = position_limit(model)  # a learned position table's rows (GPT-2, OPT); None: rotary, no bound
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunelab-generate")

    async def submit(self, job: Job) -> Job:
        return await self.enqueue(job)[0]

    def enqueue(self, *jobs: Job) -> list[asyncio.Future[Job]]:
        """`jobs` (a request's: one per prompt) in the queue now, or none of them and QueueFull when they would take
        a queue with jobs waiting past `max_queue` (the check and the place are one step: no burst passes it
        together); the futures are the jobs, answered."""
        if self.pending and len(self.pending) + len(jobs) > self.max_queue:  # (as predict's: on an empty queue a
            # request of more prompts than that gets in, or it never would; `max_inputs` bounds it)
            more = f"; this request's {len(jobs)} prompts would pass that" if len(jobs) > 1 else ""
            raise QueueFull(f"{len(self.pending)} completions are waiting (at most {self.max_queue}{more})")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Job]] = [loop.create_future() for _ in jobs]
        self.pending.extend(zip(jobs, futures, strict=True))
        if not self.running:
            self.running = True
            asyncio.create_task(self._drain())
        return futures

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self.pending:
                if len(self.pending) > 1:  # under load: a moment for more to join
                    await asyncio.sleep(self.max_wait)
                if not self._settle_stopped():
                    continue
                group = self._group()
                self.pending = [p for p in self.pending if all(p is not g for g in group)]
                self.sizes.append(len(group))
                try:
                    await loop.run_in_executor(self._pool, self._generate, [j for j, _ in group])
                except Exception as exc:  # noqa: BLE001 - every request of the batch gets it
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for job, future in group:
                    if not future.done():
                        future.set_result(job)
        finally:
            self.running = False

    def _settle_stopped(self) -> bool:
        """The jobs whose requests ended while they waited (the client gone, another of the request's prompts
        failed) answered as they are, no tokens, and out of the queue: nobody reads their rows, which cost a prefill
        and a token each. Whether any job is left waiting."""
        for job, future in self.pending:
            if job.stopped.is_set() and not future.done():
                future.set_result(job)
        self.pending = [p for p in self.pending if not p[0].stopped.is_set()]
        return bool(self.pending)

    def _group(self) -> list[tuple[Job, asyncio.Future[Job]]]:
        """The next batch: the first job waiting and, in order, those that share its key and fit beside it (at most
        `max_batch`; within the position table, `_fits`); the others wait for a later batch."""
        group = [self.pending[0]]
        key = group[0][0].key()
        for waiting in self.pending[1:]:
            if len(group) >= self.max_batch:
                break
            if waiting[0].key() == key and self._fits([j for j, _ in group] + [waiting[0]]):
                group.append(waiting)
        return group

    def _fits(self, jobs: list[Job]) -> bool:
        """Whether `jobs` fit one batch on this model: its longest prompt and its longest reply together within a
        learned position table (always, on rotary positions)."""
        if self.limit is None:
            return True
        return max(len(j.ids) for j in jobs) + max(j.cfg.max_new_tokens for j in jobs) <= self.limit

    def _generate(self, jobs: list[Job]) -> None:
        jobs = [j for j in jobs if not j.stopped.is_set()]  # (stopped since `_drain` took them: no row, as queued)
        if not jobs:
            return
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop[0]
        width = max(len(j.ids) for j in jobs)
        device = next(self.model.parameters()).device
        ids = torch.tensor([[pad] * (width - len(j.ids)) + j.ids for j in jobs], device=device)
        mask = torch.tensor([[0] * (width - len(j.ids)) + [1] * len(j.ids) for j in jobs], device=device)
        longest = max(j.cfg.max_new_tokens for j in jobs)
        if self.limit is not None:  # (each job fits alone: the server bounds its reply by the positions left)
            longest = max(1, min(longest, self.limit - width))
        cfg = jobs[0].cfg.model_copy(update={"max_new_tokens": longest, "num_beams": 1})
        rows = _Rows(jobs, self.tokenizer, self.stop)
        with SAMPLING if cfg.do_sample else nullcontext(), torch.no_grad():  # (greedy draws nothing)
            if cfg.do_sample:  # a request's own seed (it runs alone), or a fresh one for this batch: reseeding
                # every batch with one seed gave a request's 9th prompt the 1st one's reply
                torch.manual_seed(cfg.seed if jobs[0].seeded else secrets.randbits(63))
            generate_ids(self.model, ids, mask, streamer=rows, stopping_criteria=StoppingCriteriaList([rows]),
                         **generate_kwargs(cfg, self.tokenizer, self.stop))
