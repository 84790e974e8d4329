"""Streaming video restoration: decode → detect → track → restore (batched) → paste → encode, in one pass.

`restore_video(restorer, source, target)` never holds more than a fixed number of frames: a thread decodes,
detects and tracks a few frames ahead, the main thread restores a window of `window` frames at a time (all faces
of the window go to the model together, `RestoreOptions.batch_size` at most per call), and an encode thread
writes them. Faces are tracked across frames (`face.tracking`), their landmarks smoothed with a One-Euro filter,
and each face is aligned and pasted back with the affine of its smoothed landmarks, so the crop and the paste
mask stay steady.

Resumable: frames are encoded in segments of `segment_frames` into a work folder beside the target
(`.NAME.work/`). After each segment its MP4 and a JSON state (tracker, totals) are written; `resume=True`
continues after the last complete segment and gives the same output as an uninterrupted run: windows and flicker
pairs never straddle a segment start, and the tracker continues from its saved state. At the end the segments
and the input's audio are muxed into a temp file beside the target, which is then renamed over it, so the
target is either absent/old or complete. A report (`NAME.json` beside the target) holds the summary and the
flicker of every track (`video_stats`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from codeformer.atomic import remove_stale_temporaries, temp_path, write_text
from codeformer.face import detection
from codeformer.face.align import FACE_SIZE, invert_affine, similarity_least_squares, template, warp_face
from codeformer.face.detection import (
    DETECT_SHORT_SIDE,
    HOG_MIN_WINDOW,
    DlibDetector,
    HybridDetector,
    filter_faces,
    hog_upsample_for,
    select_faces,
)
from codeformer.face.paste import face_roi, paste_back
from codeformer.face.pipeline import RestoreOptions, Restorer, to_uint8
from codeformer.face.tracking import TrackedFace, Tracker, TrackerParams
from codeformer.video_io import (
    DecodedFrame,
    EncodeSettings,
    SegmentWriter,
    VideoError,
    VideoInfo,
    decode_frames,
    mux_output,
    output_format,
    probe,
)
from codeformer.video_stats import FlickerMeter, FrameCounter, Worker, background, release_free_memory
from codeformer.weights import cached_file_sha256

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
WEBM_CODECS = ("libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1")


@dataclass(frozen=True)
class VideoOptions:
    """encode: codec, crf, pixel format. window: frames restored together. segment_frames: frames per resumable
    segment (a multiple of nothing in particular; windows are cut at segment starts). tracking: association,
    gap filling, smoothing. resume: continue from the work folder. progress: tqdm bar. queue: frames the decode
    and encode threads may hold each."""

    encode: EncodeSettings = field(default_factory=EncodeSettings)
    window: int = 8
    segment_frames: int = 240
    tracking: TrackerParams = field(default_factory=TrackerParams)
    resume: bool = False
    progress: bool = True
    queue: int = 4

    def __post_init__(self) -> None:
        if self.window < 1 or self.segment_frames < 1 or self.queue < 1:
            raise ValueError(f"window, segment_frames and queue must be >= 1: {self}")


@dataclass
class VideoReport:
    """What a run did. frames: frames written; failures: one line per frame that could not be decoded;
    faces: face instances restored (detected + filled); tracks: per track id its frames, detected count and
    flicker; flicker: all tracks together; peak_frames: most frames held at once; reused_segments: segments
    taken from a previous run by resume; seconds: wall time."""

    source: str
    target: str
    frames: int = 0
    failures: list[str] = field(default_factory=list)
    faces: int = 0
    tracks: dict[int, dict] = field(default_factory=dict)
    flicker: float | None = None
    smooth: bool = True
    peak_frames: int = 0
    reused_segments: int = 0
    seconds: float = 0.0
    expected_frames: int = 0

    @property
    def missing_frames(self) -> int:
        """Frames the input's header promises that were not written (a truncated file, undecodable packets)."""
        return max(self.expected_frames - self.frames, 0)

    def summary(self) -> str:
        """A few lines for the terminal."""
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        flicker = f"{self.flicker:.3f}" if self.flicker is not None else "n/a"
        lines = [f"{self.target}: {self.frames} frames in {self.seconds:.1f} s ({fps:.2f} frames/s), "
                 f"{self.faces} faces in {len(self.tracks)} tracks, {len(self.failures)} failed frames, "
                 f"flicker {flicker} ({'smoothed' if self.smooth else 'not smoothed'})"]
        for k, t in list(self.tracks.items())[:10]:
            value = f"{t['flicker']:.3f}" if t["flicker"] is not None else "n/a"
            lines.append(f"  track {k}: {t['frames']} frames ({t['filled']} filled), flicker {value}")
        if len(self.tracks) > 10:
            lines.append(f"  ... {len(self.tracks) - 10} more tracks in the JSON report")
        lines += [f"  failed: {line}" for line in self.failures]
        if self.missing_frames:
            lines.append(f"  failed: {self.source}: {self.frames} of the {self.expected_frames} frames its header "
                         f"promises were written ({self.missing_frames} missing: truncated or corrupt?)")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready form (track ids as strings)."""
        data = dataclasses.asdict(self)
        data["tracks"] = {str(k): v for k, v in self.tracks.items()}
        return data


def work_dir(target: Path) -> Path:
    """The resumable work folder for `target`."""
    return target.parent / f".{target.name}.work"


def _write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=1, sort_keys=True))


def model_fingerprint(restorer: Restorer, model_info: dict | None = None) -> dict:
    """What identifies the network's outputs: the runner class, its precision and device, and the weights —
    the SHA-256 of the weight (or ONNX) file named in `model_info["weights"]` (`load_face_model`'s description;
    hashed once per file and process), else of the tensors of the runner's torch model, else nothing more."""
    model = restorer.model
    info = model_info or {}
    found: dict[str, object] = {"class": type(model).__name__}
    for key in ("runtime", "precision", "device"):
        value = info.get(key, getattr(model, key, None))
        found[key] = None if value is None else str(value)
    if info.get("weights"):
        found["weights_sha256"] = cached_file_sha256(str(info["weights"]))
    elif isinstance(getattr(model, "model", None), torch.nn.Module):
        found["weights_sha256"] = state_dict_sha256(model.model.state_dict())
    return found


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of a state dict's tensors (in name order)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.flatten().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _fingerprint(source: Path, restorer: Restorer, opts: RestoreOptions, video: VideoOptions,
                 model_info: dict | None) -> dict:
    """What must match for a resume: the input file, the network and its weights, and every option that changes
    the output."""
    st = source.stat()
    settings = dataclasses.asdict(dataclasses.replace(video, resume=False, progress=False))
    return {"source": str(source.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "model": model_fingerprint(restorer, model_info), "restore": dataclasses.asdict(opts),
            "video": settings}


def _prepare_work(work: Path, fingerprint: dict, resume: bool) -> tuple[int, dict | None]:
    """Create or reuse the work folder; returns (complete segments, state after the last of them)."""
    manifest = work / MANIFEST
    if resume and manifest.is_file():
        if json.loads(manifest.read_text()) != json.loads(json.dumps(fingerprint)):
            raise VideoError(f"{work}: left by a run with another input or options; remove it or drop --resume")
        done, state = 0, None
        while (work / f"seg_{done:05d}.mp4").is_file() and (work / f"seg_{done:05d}.json").is_file():
            state = json.loads((work / f"seg_{done:05d}.json").read_text())
            done += 1
        return done, state
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    _write_json(manifest, fingerprint)
    return 0, None


@dataclass
class TrackedFrame:
    """A decoded frame and its tracked faces. tracker_state: the tracker's state right after this frame when the
    frame ends a segment (what a resume of the next segment starts from), else None."""

    frame: DecodedFrame
    faces: list[TrackedFace]
    tracker_state: dict | None = None


def track_frames(frames: Iterator[DecodedFrame], restorer: Restorer, opts: RestoreOptions, tracker: Tracker,
                 info: VideoInfo, segment_frames: int) -> Iterator[TrackedFrame]:
    """Detect the faces of each frame (on its uint8 pixels: no full-frame float copy) and advance the tracks, in
    order. Runs in the decode thread, so detection overlaps with the model and the encoder."""
    for frame in frames:
        faces = filter_faces(restorer.detector.detect(frame.rgb, min_face=opts.min_face), min_face=opts.min_face)
        faces = select_faces(faces, opts.faces, frame.rgb.shape)
        tracked = tracker.update(faces, float(frame.pts * info.time_base), frame.rgb)  # pixels: no fill past a cut
        segment_end = (frame.index + 1) % segment_frames == 0
        yield TrackedFrame(frame, tracked, tracker.state_dict() if segment_end else None)


def paste_faces(rgb: np.ndarray, faces: list[np.ndarray], inverse_affines: list[np.ndarray],
                upscale: int) -> np.ndarray:
    """`paste.paste_back` for an H×W×3 uint8 frame, returning uint8. At upscale 1 only the region holding the
    faces' squares is converted to float and composited (the rest is copied), which keeps the per-frame
    allocations small and the process's memory flat on long clips."""
    if upscale != 1:
        return to_uint8(paste_back(rgb.astype(np.float32) / 255.0, faces, inverse_affines, upscale))
    rois = [r for r in (face_roi(m, FACE_SIZE, rgb.shape[:2]) for m in inverse_affines) if r is not None]
    if not rois:
        return rgb
    x0, y0 = min(r[0] for r in rois), min(r[1] for r in rois)
    x1, y1 = max(r[2] for r in rois), max(r[3] for r in rois)
    local = [m - np.array([[0.0, 0.0, x0], [0.0, 0.0, y0]]) for m in inverse_affines]  # into the region's frame
    region = rgb[y0:y1, x0:x1].astype(np.float32) / 255.0
    out = rgb.copy()
    out[y0:y1, x0:x1] = to_uint8(paste_back(region, faces, local, 1))
    return out


def restore_window(restorer: Restorer, opts: RestoreOptions, items: list[TrackedFrame]) -> list[np.ndarray]:
    """Restore a window of tracked frames: every face of the window through the model together, then each pasted
    back with the affine of its (smoothed) landmarks. Returns the output frames, H'×W'×3 uint8."""
    # Least squares, not the LMEDS fit of photos: LMEDS picks a best subset of points, so its result can jump
    # between frames while the (smoothed) landmarks move smoothly; the least-squares fit moves with them.
    affines = [[similarity_least_squares(face.landmarks5, template()) for face in item.faces] for item in items]
    crops = [warp_face(item.frame.rgb, m).astype(np.float32) / 255.0 for item, ms in zip(items, affines, strict=True)
             for m in ms]  # each 512×512×3 float32 in [0, 1]
    restored = restorer.restore_crops(np.stack(crops), opts) if crops else []
    out, k = [], 0
    for item, ms in zip(items, affines, strict=True):
        mine = list(restored[k:k + len(ms)])
        k += len(ms)
        out.append(paste_faces(item.frame.rgb, mine, [invert_affine(m) for m in ms], opts.upscale))
    return out


@dataclass
class _Run:
    """The mutable state of one run (owned by `restore_video`)."""

    info: VideoInfo
    work: Path
    tracker: Tracker
    meter: FlickerMeter
    counter: FrameCounter
    faces: int = 0
    frames: int = 0
    segment: int = 0
    writer: SegmentWriter | None = None


def _from(frames: Iterator[DecodedFrame], counter: FrameCounter, start_index: int) -> Iterator[DecodedFrame]:
    """Count the frames entering the pipeline; drop those already in finished segments."""
    for frame in frames:
        if frame.index >= start_index:
            counter.add()
            yield frame


def _write_window(run: _Run, worker: Worker, items: list[TrackedFrame], results: list[np.ndarray],
                  size: tuple[int, int], encode: EncodeSettings) -> None:
    """Measure flicker and queue the window's frames for encoding (opening the segment's writer if needed)."""
    if run.writer is None:
        run.writer = SegmentWriter(run.work / f"seg_{run.segment:05d}.mp4", run.info, size, encode)
        run.meter.break_sequence()
    writer = run.writer
    for item, rgb in zip(items, results, strict=True):
        run.meter.update(item.frame.rgb, rgb, item.faces)
        run.faces += len(item.faces)
        run.frames += 1

        def job(rgb: np.ndarray = rgb, pts: int = item.frame.pts) -> None:
            writer.write(rgb, pts)
            run.counter.remove()

        worker.submit(job)


def _end_segment(run: _Run, worker: Worker, next_index: int, tracker_state: dict) -> None:
    """Queue closing the segment and saving the state that a resume starts from."""
    if run.writer is None:
        return
    writer, name = run.writer, run.work / f"seg_{run.segment:05d}.json"
    state = {"next_index": next_index, "frames": run.frames, "faces": run.faces, "tracker": tracker_state,
             "flicker": run.meter.state_dict()}
    state = json.loads(json.dumps(state))  # a snapshot: the main thread goes on changing the live objects

    def job() -> None:
        writer.close()
        _write_json(name, state)

    worker.submit(job)
    run.writer, run.segment = None, run.segment + 1


def _process(run: _Run, restorer: Restorer, opts: RestoreOptions, video: VideoOptions, start_index: int,
             failures: list[str]) -> None:
    """Decode, detect and track (thread) → restore windows (here) → encode segments (thread), from frame
    `start_index` on."""
    info = run.info
    size = (info.width * opts.upscale, info.height * opts.upscale)
    stop = threading.Event()
    decoded = _from(decode_frames(info, failures), run.counter, start_index)
    items = background(track_frames(decoded, restorer, opts, run.tracker, info, video.segment_frames), video.queue,
                       stop)
    worker = Worker(video.queue)
    bar = tqdm(total=info.frames or None, initial=start_index, unit="frame", desc=info.path.name,
               disable=not video.progress)
    window: list[TrackedFrame] = []

    def flush() -> None:
        _write_window(run, worker, window, restore_window(restorer, opts, window), size, video.encode)
        bar.update(len(window))
        bar.set_postfix(faces=run.faces, tracks=run.tracker.next_id)
        window.clear()
        release_free_memory()

    try:
        next_index = start_index
        for item in items:
            window.append(item)
            next_index = item.frame.index + 1
            if len(window) == video.window or item.tracker_state is not None:
                flush()
            if item.tracker_state is not None:
                _end_segment(run, worker, next_index, item.tracker_state)
        if window:
            flush()
        _end_segment(run, worker, next_index, run.tracker.state_dict())  # the decode thread has finished
        worker.finish()
    except BaseException:
        error = worker.stop()
        if error is not None:
            log.debug("while stopping: %s", error)
        if run.writer is not None:
            run.writer.abort()
        raise
    finally:
        stop.set()
        items.close()
        bar.close()


def _make_report(run: _Run, source: Path, target: Path, video: VideoOptions, failures: list[str],
                 reused: int, seconds: float) -> VideoReport:
    tracks = {k: {"frames": s.frames, "detected": s.detected, "filled": s.frames - s.detected,
                  "flicker": s.flicker} for k, s in sorted(run.meter.tracks.items())}
    return VideoReport(str(source), str(target), run.frames, failures, run.faces, tracks, run.meter.overall(),
                       video.tracking.smooth, run.counter.peak, reused, seconds, run.info.frames)


def _warn_slow_detection(restorer: Restorer, opts: RestoreOptions, info: VideoInfo) -> None:
    """Say so when min_face makes dlib's HOG upsample every frame (each step about 4× the detection time)."""
    detector = restorer.detector
    if not isinstance(detector, (DlibDetector, HybridDetector)) or getattr(detector, "upsample", None) is not None:
        return  # both HOG-based detectors upsample from the min_face hint
    scale = DETECT_SHORT_SIDE / min(info.width, info.height)
    steps = hog_upsample_for(opts.min_face * scale)
    if steps:
        need = math.ceil(HOG_MIN_WINDOW / scale)
        log.warning("%s: min face %g px makes the detector upsample each frame %d time(s) (about %d× slower); "
                    "if the faces are at least %d px, --min-face %d avoids it", info.path, opts.min_face, steps,
                    4**steps, need, need)


def report_path(target: Path) -> Path:
    """Where the JSON report of `target` goes: beside it, NAME.json (e.g. out.mp4 → out.mp4.json)."""
    return target.with_name(target.name + ".json")


def restore_video(restorer: Restorer, source: str | os.PathLike[str], target: str | os.PathLike[str],
                  opts: RestoreOptions | None = None, video: VideoOptions | None = None,
                  model_info: dict | None = None) -> VideoReport:
    """Restore every face of the video `source` into `target` (format by extension), keeping its audio (copied),
    timestamps, rotation and duration. opts: per-face options (w, upscale, faces, min_face, batch_size);
    video: encoding, window, segments, tracking, resume. model_info: `backends.load_face_model`'s description
    (its weights file is hashed so a resume never mixes outputs of other weights, runtime or precision).
    Writes the report JSON beside `target`.
    Raises `VideoError` (one line naming the file) when the input cannot be used or the output not written.
    Frames missing against the header (`VideoReport.missing_frames`) are reported, not silently dropped."""
    started = time.perf_counter()
    opts = opts or restorer.options
    if opts.profile != "default" or opts.paste_mask != "square" or opts.needs_upsampler:
        raise ValueError("videos take the default profile with the square mask and no upsampler")
    video = video or VideoOptions()
    source, target = Path(source), Path(target)
    if opts.aligned:
        raise VideoError(f"{source}: aligned-crop mode is for photos, not videos")
    if output_format(target) == "webm" and video.encode.codec not in WEBM_CODECS:
        raise VideoError(f"{target}: WebM holds only {', '.join(WEBM_CODECS)} video; choose one with --codec")
    info = probe(source)
    if restorer.detector is None:  # as Restorer.detect does on first use
        restorer.detector = detection.make_detector()
    _warn_slow_detection(restorer, opts, info)
    if target.is_dir():  # found now, not after the whole video was restored
        raise VideoError(f"{target}: is a folder; give the output video's file name")
    if target.exists() and os.path.samefile(target, source):  # also through a symlink or a hard link
        raise VideoError(f"{target}: the output would overwrite the input")
    remove_stale_temporaries(target.parent, time.time())  # what a killed run left beside the target
    work = work_dir(target)
    done, state = _prepare_work(work, _fingerprint(source, restorer, opts, video, model_info), video.resume)
    tracker = Tracker.from_state(state["tracker"], video.tracking) if state else Tracker(video.tracking)
    meter = FlickerMeter(opts.upscale)
    run = _Run(info, work, tracker, meter, FrameCounter(), segment=done)
    if state:
        meter.load_state(state["flicker"])
        run.faces, run.frames = state["faces"], state["frames"]
        log.info("%s: resuming after %d segment(s), at frame %d", source, done, state["next_index"])
    failures: list[str] = []
    _process(run, restorer, opts, video, state["next_index"] if state else 0, failures)
    segments = [work / f"seg_{k:05d}.mp4" for k in range(run.segment)]
    tmp = temp_path(target, suffix=target.suffix)  # the muxer picks the format by the extension
    try:
        mux_output(segments, info, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    report = _make_report(run, source, target, video, failures, done, time.perf_counter() - started)
    _write_json(report_path(target), report.to_dict())
    shutil.rmtree(work)
    return report
