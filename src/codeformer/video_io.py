"""Video files through PyAV: probe, streaming decode, segment encode, and the final mux with the audio copied.

PyAV rather than an ffmpeg subprocess: its wheels on PyPI bundle FFmpeg (with libx264 and an AAC codec), so
`pip install` is the whole setup on every platform and no system ffmpeg is needed; it also gives packets and
timestamps directly, which is what copying the audio unchanged and keeping the exact frame times needs.

Frames are decoded one at a time (never a whole clip): `decode_frames` yields `DecodedFrame`s with uint8 RGB turned
upright by the stream's rotation. The restored frames of a segment go to `SegmentWriter`, which encodes them into
an MP4 in a work folder keeping each frame's timestamp in the input's time base. `mux_output` then copies the
segments' video packets and the input's audio packets (no re-encode) into the output, sets the rotation back as
display metadata, and so keeps the frame rate, time base, rotation and duration of the input.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
_IMAGE_DEMUXERS = ("image2", "gif", "apng", "webp", "ico")  # and every "*_pipe" (jpeg_pipe, png_pipe, ...)


class VideoError(Exception):
    """A video that cannot be read or written; the message is one line naming the file."""


@dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know about an input. width, height: coded size (before rotation). rate:
    average frame rate. time_base: of the video stream. frames: count the header promises (`expected_frames`; 0 when
    it says nothing).
    rotation: counter-clockwise degrees the display applies (0, 90, 180, 270). audio: number of audio streams."""

    path: Path
    codec: str
    width: int
    height: int
    rate: Fraction
    time_base: Fraction
    frames: int
    rotation: int
    audio: int


@dataclass
class DecodedFrame:
    """One decoded frame. index: position among decoded frames (0-based). pts: timestamp in the stream's time
    base. rgb: H×W×3 uint8, upright (rotation applied)."""

    index: int
    pts: int
    rgb: np.ndarray


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """True for a name with a video extension (any case)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _open_input(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    try:
        container = av.open(str(path), "r")
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: not a readable video ({exc.strerror or type(exc).__name__})") from exc
    kind = container.format.name
    if kind.endswith("_pipe") or kind in _IMAGE_DEMUXERS:  # FFmpeg reads a still image as a one-frame "video"
        container.close()
        raise VideoError(f"{path}: not a video container (FFmpeg reads it as {kind} image data); give a video file")
    return container


def expected_frames(stream: av.stream.Stream) -> int:
    """Frames the header promises: its frame count when it has one; else a lower bound from its duration × average
    rate (2 % and one frame below the estimate, so a variable frame rate is not taken for lost frames); 0 when it
    says neither."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration and stream.time_base and rate:
        estimate = float(stream.duration * stream.time_base * rate)
        return max(int(estimate * 0.98) - 1, 0)
    return 0


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Read the header and the first frame of `path`. Raises `VideoError` (one line naming the file) for a
    missing, empty or unreadable file, no video stream, a codec without a decoder, or no decodable frame."""
    path = Path(path)
    with _open_input(path) as container:
        if not container.streams.video:
            raise VideoError(f"{path}: no video stream")
        stream = container.streams.video[0]
        codec = stream.codec_context.name if stream.codec_context else "unknown"
        first = None
        try:
            for frame in container.decode(stream):
                first = frame
                break
        except av.error.FFmpegError as exc:
            raise VideoError(f"{path}: cannot decode the {codec} video stream ({exc.strerror})") from exc
        if first is None:
            raise VideoError(f"{path}: the video stream has no decodable frame (codec {codec})")
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        return VideoInfo(path, codec, first.width, first.height, Fraction(rate), Fraction(stream.time_base),
                         expected_frames(stream), int(first.rotation) % 360, len(container.streams.audio))


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a coded frame the way the display would (counter-clockwise by `rotation` degrees, a multiple of 90)."""
    return np.ascontiguousarray(np.rot90(rgb, k=(rotation // 90) % 4))


def coded(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Inverse of `upright`: back to the coded orientation."""
    return np.ascontiguousarray(np.rot90(rgb, k=-(rotation // 90) % 4))


def decode_frames(info: VideoInfo, failures: list[str]) -> Iterator[DecodedFrame]:
    """Yield every decodable frame of `info.path` in order, upright, one at a time. A packet the decoder rejects
    is reported in `failures` (one line each) and skipped; a frame the decoder flags as corrupt (errors concealed)
    is reported and kept. Frames without a timestamp, or with one not after the
    previous, get the previous + 1 so the encoder always sees increasing times. Flush packets (dts None) go to
    the decoder too, or the last frames would be lost."""
    with _open_input(info.path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index, last_pts = 0, None
        for packet in container.demux(stream):
            try:
                frames = stream.decode(packet)
            except av.error.FFmpegError as exc:
                where = f"packet at pts {packet.pts}" if packet.pts is not None else "a packet"
                failures.append(f"{info.path}: {where} could not be decoded ({exc.strerror}); skipped")
                continue
            for frame in frames:
                if frame.is_corrupt:
                    failures.append(f"{info.path}: frame {index} decoded with errors (concealed by the decoder); kept")
                pts = frame.pts
                if pts is None or (last_pts is not None and pts <= last_pts):
                    pts = 0 if last_pts is None else last_pts + 1
                last_pts = pts
                rgb = upright(frame.to_ndarray(format="rgb24"), info.rotation)
                yield DecodedFrame(index, pts, rgb)
                index += 1


@dataclass(frozen=True)
class EncodeSettings:
    """codec: an FFmpeg encoder name (libx264, libx265, libvpx-vp9, libsvtav1, ...). crf: constant quality
    (None: the encoder's default). pix_fmt: output pixel format."""

    codec: str = "libx264"
    crf: int | None = 18
    pix_fmt: str = "yuv420p"


class SegmentWriter:
    """Encodes the frames of one segment into an MP4 at `path`, keeping the input timestamps. Written to a temp
    name and renamed by `close()`, so a segment file that exists is complete."""

    def __init__(self, path: Path, info: VideoInfo, size: tuple[int, int], settings: EncodeSettings):
        self.path = path
        self.tmp = path.with_name(path.stem + ".partial" + path.suffix)
        self.info = info
        self.container = av.open(str(self.tmp), "w", format="mp4")
        options = {"crf": str(settings.crf)} if settings.crf is not None else {}
        try:
            self.stream = self.container.add_stream(settings.codec, rate=info.rate, options=options)
        except (av.error.FFmpegError, ValueError) as exc:
            self.container.close()
            self.tmp.unlink(missing_ok=True)
            raise VideoError(f"{info.path}: cannot encode with video codec {settings.codec!r} ({exc})") from exc
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = settings.pix_fmt
        self.stream.codec_context.time_base = info.time_base
        self.stream.time_base = info.time_base

    def write(self, rgb_upright: np.ndarray, pts: int) -> None:
        """Encode one H×W×3 uint8 upright frame with timestamp `pts` (input time base)."""
        frame = av.VideoFrame.from_ndarray(coded(rgb_upright, self.info.rotation), format="rgb24")
        frame.pts, frame.time_base = pts, self.info.time_base
        try:
            self.container.mux(self.stream.encode(frame))
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoError(f"{self.info.path}: encoding its frames with {self.stream.codec_context.name} "
                             f"({self.stream.width}×{self.stream.height}, {self.stream.pix_fmt}) failed ({exc})"
                             ) from exc

    def close(self) -> None:
        """Flush the encoder, close the file and move it to its final name."""
        self.container.mux(self.stream.encode(None))
        self.container.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Close and delete the partial file (after an error or an interrupt)."""
        try:
            self.container.close()
        except av.error.FFmpegError as exc:
            log.debug("closing a partial segment %s: %s", self.tmp, exc)
        self.tmp.unlink(missing_ok=True)


def _packets(container: av.container.InputContainer, streams: dict[int, av.stream.Stream],
             order: int) -> Iterator[tuple[float, int, av.Packet]]:
    """(dts in seconds, order, packet) for every real packet of the input streams keyed by index in `streams`,
    in file order, each retargeted to its output stream (one demux pass for all of them)."""
    inputs = [s for s in container.streams if s.index in streams]
    for packet in container.demux(*inputs):
        if packet.dts is None or packet.size == 0:
            continue
        seconds = float(packet.dts * packet.time_base)
        packet.stream = streams[packet.stream_index]
        yield seconds, order, packet


def _segment_packets(segments: Sequence[Path], out: av.stream.Stream, extradata: bytes | None
                     ) -> Iterator[tuple[float, int, av.Packet]]:
    """Video packets of the segments in order; each segment must carry the same codec headers."""
    for seg in segments:
        with av.open(str(seg), "r") as container:
            stream = container.streams.video[0]
            if stream.codec_context.extradata != extradata:
                raise VideoError(f"{seg}: codec headers differ from the first segment; cannot join the segments")
            yield from _packets(container, {stream.index: out}, 0)


def mux_output(segments: Sequence[Path], info: VideoInfo, target: Path) -> None:
    """Write `target`: the video packets of `segments` (in order) and the audio packets of `info.path`, copied,
    interleaved by time, with the rotation of the input as display metadata. The container format follows
    the extension of `target`. Raises `VideoError` naming the file when the container cannot hold a stream."""
    if not segments:
        raise VideoError(f"{info.path}: no frame could be decoded; nothing to write")
    with av.open(str(segments[0]), "r") as first:
        template, extradata = first.streams.video[0], first.streams.video[0].codec_context.extradata
        try:
            output = av.open(str(target), "w", format=output_format(target))
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoError(f"{target}: cannot write this container ({exc})") from exc
        with output, _open_input(info.path) as source:
            vout = output.add_stream_from_template(template)
            if info.rotation:
                vout.set_display_rotation(info.rotation)
            audio = {s.index: output.add_stream_from_template(s) for s in source.streams.audio}
            skipped = [s.type for s in source.streams if s.type not in ("video", "audio")]
            if skipped:
                log.info("%s: %s stream(s) not copied", info.path, ", ".join(skipped))
            feeds = [_segment_packets(segments, vout, extradata)]
            if audio:
                feeds.append(_packets(source, audio, 1))
            try:
                for _, _, packet in heapq.merge(*feeds, key=lambda item: (item[0], item[1])):
                    output.mux(packet)
            except av.error.FFmpegError as exc:
                raise VideoError(f"{target}: cannot write ({exc.strerror}); try another container such as .mkv"
                                 ) from exc


def output_format(target: Path) -> str:
    """FFmpeg muxer name for the target's extension (the temp name keeps it)."""
    formats = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
    suffix = target.suffix.lower()
    if suffix not in formats:
        raise VideoError(f"{target}: unknown video extension {suffix!r}; use one of {', '.join(formats)}")
    return formats[suffix]
