"""Batching across concurrent callers: many threads call `restore(x, w)`, one worker thread runs the model.

Each request thread of the server runs its own detect → align → paste; only the model call goes through
`BatchingModel.restore`, which queues the crops and waits. The worker takes whatever is queued (waiting at most
`linger_s` for more once it has something), concatenates the crops of several requests into one batch of at
most `max_batch` faces, and runs the model once with a per-face w vector, so requests asking for different w
still share a forward pass. On a CPU this mostly saves per-call overhead; on a GPU it is what keeps the device
busy (CodeFormer#157, #244). A batch that runs out of device memory is split in halves and the smaller size is
kept (`codeformer.oom`; `batch_limit.notes`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

import torch

from codeformer.face.pipeline import FaceModel
from codeformer.oom import BatchLimit, run_in_chunks

log = logging.getLogger(__name__)


@dataclass
class _Job:
    x: torch.Tensor  # (b, 3, S, S)
    w: torch.Tensor  # (b,) float32
    adain: bool
    done: threading.Event = field(default_factory=threading.Event)
    result: torch.Tensor | None = None
    error: BaseException | None = None


@dataclass
class BatchStats:
    """Counters since start: model calls, faces restored, the largest batch, and how many calls mixed
    crops from more than one caller."""

    calls: int = 0
    faces: int = 0
    largest_batch: int = 0
    shared_calls: int = 0


class BatchingModel:
    """Thread-safe `FaceModel` that funnels every call into one worker thread (started on first use).

    model: the real model, e.g. `CodeFormer` or `OnnxRestorer` (its `restore` must accept a (B,) tensor w
    and an `adain_latent` keyword). max_batch: most faces per model call (a single larger call runs alone).
    linger_s: how long the worker waits for more work once it has some.
    """

    def __init__(self, model: FaceModel, max_batch: int = 8, linger_s: float = 0.002) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.model = model
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.stats = BatchStats()
        self.batch_limit = BatchLimit()
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def restore(self, x: torch.Tensor, w: float | torch.Tensor = 0.5, adain_latent: bool = True) -> torch.Tensor:
        """Queue (B, 3, S, S) faces with w (a float or (B,) tensor) and block until they are restored."""
        weights = torch.as_tensor(w, dtype=torch.float32).detach().cpu().reshape(-1).expand(len(x)).clone()
        job = _Job(x, weights, adain_latent)
        self._ensure_started()
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    @property
    def running(self) -> bool:
        """Whether the worker thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def pending(self) -> int:
        """Calls waiting for the worker (approximate)."""
        return self._queue.qsize()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the queued work is done. Later `restore` calls raise RuntimeError."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)
        while True:  # anything queued after the stop marker gets an answer too
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job.error = RuntimeError("the batching worker is closed")
                job.done.set()

    def _ensure_started(self) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the batching worker is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="codeformer-batcher", daemon=True)
                self._thread.start()

    def _collect(self, first: _Job) -> tuple[list[_Job], bool]:
        """`first` plus queued jobs with the same AdaIN setting, up to max_batch faces; (jobs, stop seen)."""
        jobs, faces = [first], len(first.x)
        deadline = time.monotonic() + self.linger_s
        while faces < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            if job.adain != first.adain or faces + len(job.x) > self.max_batch:
                self._run([job])  # does not fit this batch: run it on its own rather than reorder the queue
                continue
            jobs.append(job)
            faces += len(job.x)
        return jobs, False

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._collect(first)
            self._run(jobs)
            if stop:
                return

    def _run(self, jobs: list[_Job]) -> None:
        try:
            x = torch.cat([job.x for job in jobs])  # (sum b, 3, S, S)
            w = torch.cat([job.w for job in jobs]).to(x.device)
            with torch.no_grad():  # a batch that runs out of device memory is split (codeformer.oom)
                y = run_in_chunks(self.model.restore, x, w, self.batch_limit, adain_latent=jobs[0].adain)
        except Exception as exc:  # handed to every waiting caller, who re-raises it
            log.warning("model call failed for %d job(s): %s", len(jobs), exc)
            for job in jobs:
                job.error = exc
                job.done.set()
            return
        self.stats.calls += 1
        self.stats.faces += len(x)
        self.stats.largest_batch = max(self.stats.largest_batch, len(x))
        self.stats.shared_calls += len(jobs) > 1
        start = 0
        for job in jobs:
            job.result = y[start:start + len(job.x)]
            start += len(job.x)
            job.done.set()
