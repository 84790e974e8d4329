"""Going on after an out-of-memory error: halve the batch and retry, and remember the size that fits.

A GPU run that asks for more faces per model call than the card holds fails with
`torch.cuda.OutOfMemoryError` (or, on other back ends, a RuntimeError whose text says "out of memory"). Rather
than stop a long folder or video run, `run_in_chunks` splits the batch in halves until it fits, records a note
once per new limit, and keeps the smaller size for the rest of the run. A single face that does not fit is
re-raised: there is nothing smaller to try.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import torch

log = logging.getLogger(__name__)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocator's out-of-memory error (CUDA, MPS, or a plain RuntimeError saying so)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class BatchLimit:
    """The largest batch known to fit (None: no limit seen yet) and the notes written when it shrank.
    Shared by the threads that call one model, hence the lock."""

    def __init__(self) -> None:
        self.size: int | None = None
        self.notes: list[str] = []
        self._lock = threading.Lock()

    def cap(self, batch: int) -> int:
        """`batch`, or the known limit when that is smaller."""
        with self._lock:
            return batch if self.size is None else max(1, min(batch, self.size))

    def shrink(self, failed: int, exc: BaseException) -> int:
        """Record that `failed` faces did not fit; returns the new size (half of it, at least 1)."""
        new = max(1, failed // 2)
        with self._lock:
            if self.size is None or new < self.size:
                self.size = new
                note = (f"out of memory with {failed} faces per model call; going on with {new} "
                        f"({' '.join(str(exc).split())[:120]})")
                self.notes.append(note)
                log.warning("%s", note)
            return self.size


def _slice_w(w: float | torch.Tensor, start: int, stop: int, batch: int) -> float | torch.Tensor:
    """w for faces start..stop: a per-face (B,) tensor is sliced, a scalar is kept."""
    if isinstance(w, torch.Tensor) and w.dim() > 0 and w.numel() == batch:
        return w[start:stop]
    return w


def run_in_chunks(fn: Callable[..., torch.Tensor], x: torch.Tensor, w: float | torch.Tensor, limit: BatchLimit,
                  **kwargs: object) -> torch.Tensor:
    """`fn(x, w, **kwargs)` for faces x (B, ...) in chunks of at most `limit.size`; a chunk that runs out of
    memory is halved (the limit with it) and retried. Returns the concatenated outputs, in order."""
    batch = len(x)
    outputs = []
    start = 0
    size = limit.cap(batch)
    while start < batch:
        stop = min(batch, start + size)
        try:
            outputs.append(fn(x[start:stop], _slice_w(w, start, stop, batch), **kwargs))
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc) or stop - start == 1:
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # hand back the failed call's blocks before the smaller retry
            size = limit.shrink(stop - start, exc)
            continue
        start = stop
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)
