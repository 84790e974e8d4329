"""`codeformer restore SRC -o DST --engine ray`: the photo pipeline as a Ray Data dataset.

The stages follow the cost of the work:

  listing and planning (driver)   inputs → one row per photo with its output name (`face.batch.output_path`, in
                                  listing order, so both engines name every photo alike) and its last manifest line
  prepare (CPU actors)            read, hash, skip if done (`manifest.done_record`), decode, detect, align
                                  (`Restorer.prepare`); an actor pool, so each worker loads the detector once
  network (model actors)          `Restorer.restore_crops` on the faces of several photos at once, one model per
                                  actor, on a GPU with `gpus_per_worker`
  finish (CPU tasks)              paste back, encode, atomic write (`Restorer.finish`, `face.batch.write_outputs`)
  manifest (driver)               one "photo" line per finished row (`codeformer.manifest`), progress, summary

Ray's streaming executor holds only a bounded number of rows in flight, so memory does not grow with the archive.
A task or actor call lost with its worker is retried by Ray (Ray Data's defaults: actors are restarted and their
calls retried without limit, tasks retried a few times); since outputs are renamed into place whole, a retry
rewrites the same bytes, and the driver writes one manifest line per photo. A killed driver loses at most the
lines of rows it had not yet written; their sidecars carry the input hash and fingerprint, so a rerun counts
them done.

Both the local and the Ray run restore a photo's faces with the same code. What can differ is the float arithmetic
of the network: the actor batches faces from several photos and runs `cpus_per_worker` torch threads. A model
whose result for a face depends on neither gives byte-identical outputs; CodeFormer in fp32 on a CPU moves by
~1e-5 with either, which can change a rare 8-bit pixel by one level (docs/cluster.md has the measurement).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from codeformer.cluster.sources import expand_sources, is_uri, read_bytes
from codeformer.data.images import Picture, read_image
from codeformer.face.batch import (
    PER_FILE_ERRORS,
    BatchReport,
    OutputOptions,
    one_line_error,
    output_path,
    run_options,
    write_outputs,
)
from codeformer.face.detection import FaceDetector
from codeformer.face.pipeline import FaceModel, Prepared, RestoreOptions, Restorer, as_rgb_float
from codeformer.manifest import (
    Job,
    Manifest,
    bytes_sha256,
    done_record,
    file_sha256,
    fingerprint,
    photo_record,
    run_record,
)

log = logging.getLogger(__name__)

_FLUSH_ROWS, _FLUSH_SECONDS = 64, 2.0  # manifest lines are appended in groups, at least this often


class ModelSource(Protocol):
    """What the engine needs to know of the model: how each actor loads it, and what identifies its outputs
    (e.g. `codeformer.backends.ModelSpec`). It travels to the workers, so it must be picklable."""

    def load(self) -> FaceModel: ...

    def identity(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class ClusterOptions:
    """Where and how wide the Ray run is.

    address: a running cluster ("auto", "ray://host:10001", "host:6379"); None: $RAY_ADDRESS if set, else a Ray
    started on this machine for the run (and stopped after it). workers: model actors. gpus_per_worker: GPUs
    each (fractions share a GPU); 0 runs the model on CPUs. cpus_per_worker: CPUs each model actor reserves
    (its torch threads). cpus_per_task: CPUs each decoding/detecting actor and each writing task reserves.
    prepare_workers: most decoding/detecting actors (None: one per CPU left over by the model actors).
    photos_per_call: photos whose faces go to one model call (None: the batch size).
    object_store_memory: bytes for the local Ray's object store (None: Ray's default, 30 % of memory).
    """

    address: str | None = None
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    cpus_per_task: float = 0.5
    prepare_workers: int | None = None
    photos_per_call: int | None = None
    object_store_memory: int | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0 or self.cpus_per_task <= 0:
            raise ValueError("gpus_per_worker must be >= 0, cpus_per_worker and cpus_per_task > 0")
        if self.prepare_workers is not None and self.prepare_workers < 1:
            raise ValueError(f"prepare_workers must be at least 1, got {self.prepare_workers}")
        if self.photos_per_call is not None and self.photos_per_call < 1:
            raise ValueError(f"photos_per_call must be at least 1, got {self.photos_per_call}")


@dataclass
class _Work:
    """What travels from prepare to finish for one photo: the decoded picture, its prepared faces, and (after
    the network) the restored crops, N×512×512×3 float32 in [0, 1]."""

    picture: Picture
    prepared: Prepared
    restored: np.ndarray | None = None


def _failed(row: dict[str, Any], error: str, fp: str, seconds: float) -> dict[str, Any]:
    line = photo_record(row["source"], row["key"], row["sha"], fp, 0, error, seconds)
    return {**row, "state": "failed", "line": json.dumps(line), "work": None}


class _Prepare:
    """Stage 1, a CPU actor: read, hash, skip what is done, decode, detect, align."""

    def __init__(self, opts: RestoreOptions, fp: str, detector: Callable[[], FaceDetector] | None) -> None:
        self.opts, self.fp = opts, fp
        self.restorer = Restorer(model=None, detector=detector() if detector else None, options=opts)

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        row = {**row, "sha": "", "state": "todo", "line": "", "work": None, "seconds": 0.0}
        try:
            if not is_uri(row["source"]) and Path(row["output"]).resolve() == Path(row["source"]).resolve():
                raise OSError(f"{row['source']}: the output would overwrite the input; choose another -o folder")
            data = read_bytes(row["source"]) if is_uri(row["source"]) else None
            row["sha"] = bytes_sha256(data) if data is not None else (file_sha256(row["source"]) or "")
            previous = json.loads(row["previous"]) if row["previous"] else None
            done = done_record(previous, row["source"], row["sha"] or None, self.fp, Path(row["output"]))
            if done is not None:
                done["output"] = row["key"]
                return {**row, "state": "done", "line": json.dumps(done)}
            pic = read_image(data, name=row["source"]) if data is not None else read_image(row["source"])
            rgb, _ = as_rgb_float(pic)
            row["work"] = _Work(pic, self.restorer.prepare(rgb, self.opts))
        except PER_FILE_ERRORS as exc:
            return _failed(row, one_line_error(row["source"], exc), self.fp, time.perf_counter() - start)
        row["seconds"] = time.perf_counter() - start
        return row


class _Network:
    """Stage 2, a model actor: one model, fed the faces of several photos per call."""

    def __init__(self, model: ModelSource, opts: RestoreOptions, fp: str, device: str, threads: int) -> None:
        import torch

        torch.set_num_threads(threads)  # as many as the CPUs this actor reserved
        self.opts, self.fp = opts, fp
        self.restorer = Restorer(model.load(), detector=None, device=device, options=opts)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for key in ("state", "line", "work"):  # fixed-width string arrays would cut the new values short
            batch[key] = np.array(batch[key], dtype=object)  # a writable copy
        batch["seconds"] = np.array(batch["seconds"], dtype=np.float64)
        rows = [i for i, state in enumerate(batch["state"]) if state == "todo"]
        works: list[_Work] = [batch["work"][i] for i in rows]
        counts = [len(w.prepared.crops) for w in works]
        if not sum(counts):
            for w in works:
                w.restored = w.prepared.crops
            return batch
        start = time.perf_counter()
        crops = np.concatenate([w.prepared.crops for w in works if len(w.prepared.crops)])
        try:
            restored = self.restorer.restore_crops(crops, self.opts)
        except PER_FILE_ERRORS as exc:
            seconds = time.perf_counter() - start
            for i in rows:
                row = {k: batch[k][i] for k in ("source", "key", "sha")}
                batch["state"][i] = "failed"
                batch["line"][i] = json.dumps(photo_record(row["source"], row["key"], row["sha"], self.fp, 0,
                                                           one_line_error(row["source"], exc), seconds))
                batch["work"][i] = None
            return batch
        share = (time.perf_counter() - start) / len(crops)
        at = 0
        for i, w, n in zip(rows, works, counts, strict=True):
            w.restored = restored[at:at + n]
            w.prepared.timings["restore"] = share * n
            batch["seconds"][i] += share * n
            at += n
        return batch


def _finish(row: dict[str, Any], opts: RestoreOptions, output: OutputOptions, fp: str) -> dict[str, Any]:
    """Stage 3, a CPU task: paste, encode and write one photo; returns the small row the driver records."""
    start = time.perf_counter()
    small = {k: row[k] for k in ("index", "source", "key", "state", "line")}
    if row["state"] != "todo":
        return small
    work: _Work = row["work"]
    try:
        rgb, grey = as_rgb_float(work.picture)
        result = Restorer(model=None).finish(work.picture, rgb, grey, work.prepared, work.restored, opts)
        stamp = {"input_sha256": row["sha"], "fingerprint": fp}
        write_outputs(row["source"], Path(row["rel"]), Path(row["output"]), work.picture, result, opts, output,
                      stamp)
    except PER_FILE_ERRORS as exc:
        failed = _failed(row, one_line_error(row["source"], exc), fp, row["seconds"] + time.perf_counter() - start)
        return {k: failed[k] for k in small}
    line = photo_record(row["source"], row["key"], row["sha"], fp, len(result.faces), "",
                        row["seconds"] + time.perf_counter() - start)
    return {**small, "state": "ok", "line": json.dumps(line)}


def plan_jobs(inputs: Iterable[str], output: OutputOptions) -> tuple[list[Job], list[tuple[str, str]]]:
    """Every photo among `inputs` (`sources.expand_sources`) as a `Job` with its output path, named in listing
    order as the local run names them, plus [(input, reason)] for inputs that cannot be listed."""
    found, failures = expand_sources(inputs, output.recursive, output.outdir)
    taken: set[Path] = set()
    jobs = []
    for source, rel in found:
        try:
            jobs.append(Job(source, rel, output_path(rel, output.ext, output.outdir, taken)))
        except PER_FILE_ERRORS as exc:
            failures.append((source, one_line_error(source, exc)))
    return jobs, failures


def _start_ray(cluster: ClusterOptions) -> bool:
    """Connect to (or start) Ray; True when this call started it (and should stop it)."""
    import ray

    if ray.is_initialized():
        return False
    address = cluster.address or os.environ.get("RAY_ADDRESS") or None
    # Workers' own output stays in Ray's log files (/tmp/ray/session_*/logs): bad photos are reported as rows, and
    # an error that stops the run is raised here in one line.
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
    if address is None and cluster.object_store_memory:
        kwargs["object_store_memory"] = cluster.object_store_memory
    ray.init(address=address, **kwargs)
    return True


def _dataset(jobs: list[Job], previous: dict[str, dict], opts: RestoreOptions, output: OutputOptions,
             model: ModelSource, fp: str, cluster: ClusterOptions,
             detector: Callable[[], FaceDetector] | None, device: str) -> Any:
    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours is the one tqdm bar over photos
    ctx.print_on_execution_start = False
    ctx.enable_fallback_to_arrow_object_ext_type = True  # _Work travels pickled, as Ray does by itself (quietly)
    items = []
    for i, job in enumerate(jobs):
        key = job.key(output.outdir)
        items.append({"index": i, "source": job.source, "rel": job.rel.as_posix(), "output": str(job.output),
                      "key": key, "previous": json.dumps(previous[key]) if key in previous else ""})
    prepare_size = _prepare_pool_size(cluster, ray.cluster_resources())
    # One row a block: photos are large and few per second, and small blocks let every actor start at once.
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items), 100_000)))
    ds = ds.map(_Prepare, fn_constructor_kwargs={"opts": opts, "fp": fp, "detector": detector},
                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=prepare_size),
                num_cpus=cluster.cpus_per_task)
    ds = ds.map_batches(_Network, fn_constructor_kwargs={"model": model, "opts": opts, "fp": fp, "device": device,
                                               "threads": max(1, round(cluster.cpus_per_worker))},
                        batch_size=cluster.photos_per_call or opts.batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=cluster.workers), num_cpus=cluster.cpus_per_worker,
                        num_gpus=cluster.gpus_per_worker or None)
    return ds.map(_finish, fn_kwargs={"opts": opts, "output": output, "fp": fp}, num_cpus=cluster.cpus_per_task)


def _prepare_pool_size(cluster: ClusterOptions, resources: dict[str, float]) -> int:
    """How many decoding/detecting actors fit beside the model actors and one writing task; ValueError when the
    stages cannot all run at once (Ray would wait forever for the CPUs or GPUs)."""
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    model_cpus, task = cluster.workers * cluster.cpus_per_worker, cluster.cpus_per_task
    if cluster.workers * cluster.gpus_per_worker > gpus:
        raise ValueError(f"the Ray cluster has {gpus:g} GPU(s); {cluster.workers} worker(s) × "
                         f"{cluster.gpus_per_worker:g} GPU need {cluster.workers * cluster.gpus_per_worker:g}")
    if model_cpus + 2 * task > cpus:
        raise ValueError(f"the Ray cluster has {cpus:g} CPU(s); {cluster.workers} worker(s) × "
                         f"{cluster.cpus_per_worker:g} CPU, plus {task:g} to decode and {task:g} to write, need "
                         f"{model_cpus + 2 * task:g}: lower --workers or --cpus-per-worker")
    fits = int((cpus - model_cpus - task) // task)
    return max(1, min(fits, int(cpus - model_cpus) or 1, cluster.prepare_workers or fits))


def _root_cause(exc: BaseException) -> str:
    """One line for a Ray error: the last line of the innermost error's text (the user code's exception)."""
    while getattr(exc, "cause", None) is not None and exc.cause is not exc:
        exc = exc.cause
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def restore_archive(inputs: Iterable[str], model: ModelSource, output: OutputOptions,
                    opts: RestoreOptions | None = None, cluster: ClusterOptions | None = None,
                    detector: Callable[[], FaceDetector] | None = None, device: str = "cpu",
                    progress: bool = True) -> BatchReport:
    """Restore every photo among `inputs` (folders, image files, list files; paths or URIs, see
    `codeformer.cluster.sources`) into `output.outdir` with Ray, resuming from OUTDIR's manifest: photos done
    with the same input bytes and options are skipped, the rest restored, each recorded in the manifest.

    model: how actors load the model (`codeformer.backends.ModelSpec`). detector: makes each prepare actor's face
    detector (None: dlib's). device: where the model actors run it ("cuda" with `gpus_per_worker`).
    Returns the counts and failures, as the local run does (`skipped`: photos already done).
    """
    import ray

    opts = opts or RestoreOptions()
    cluster = cluster or ClusterOptions()
    start = time.perf_counter()
    report = BatchReport()
    jobs, report.failures = plan_jobs(inputs, output)
    record = run_options(opts, output, model.identity())
    fp = fingerprint(record)
    output.outdir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(output.outdir)
    previous = manifest.read()
    manifest.append([run_record(fp, record, "ray")])
    started = _start_ray(cluster) if jobs else False
    pending: list[dict] = []
    try:
        flushed = time.monotonic()
        rows = _dataset(jobs, previous, opts, output, model, fp, cluster, detector, device).iter_rows() \
            if jobs else []
        for row in tqdm(rows, total=len(jobs), disable=not progress, unit="img", file=sys.stderr,
                        desc="restore (ray)"):
            line = json.loads(row["line"])
            if row["state"] == "done":
                report.skipped += 1
                if line.get("recovered"):
                    pending.append(line)
            else:
                pending.append(line)
                if line["status"] == "ok":
                    report.images += 1
                    report.faces += int(line["faces"])
                else:
                    report.failures.append((row["source"], line["error"]))
            if len(pending) >= _FLUSH_ROWS or time.monotonic() - flushed > _FLUSH_SECONDS:
                manifest.append(pending)
                pending, flushed = [], time.monotonic()
    except ray.exceptions.RayError as exc:  # e.g. every model actor failed to load its weights
        raise RuntimeError(f"the Ray run stopped: {_root_cause(exc)}") from exc
    finally:
        manifest.append(pending)  # the photos finished before a stop are recorded too
        if started:
            ray.shutdown()
    report.seconds = time.perf_counter() - start
    return report
