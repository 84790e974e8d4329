"""Synthetic clips for the video tests: a face panning over a textured background, a sine tone on AAC audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from codeformer.data.images import read_image
from tests.face_helpers import IdentityRestorer  # noqa: F401  (re-exported for the video tests)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ASTRONAUT = DATA / "astronaut.png"
SAMPLE_RATE = 44100


def background(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random texture, H×W×3 uint8 (the same for a given seed)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 200, size=(max(h // 16, 2), max(w // 16, 2), 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def face_patch(side: int) -> np.ndarray:
    """The astronaut's head and shoulders, side×side×3 uint8."""
    rgb = read_image(ASTRONAUT).pixels[:, :, :3]
    return cv2.resize(np.ascontiguousarray(rgb[0:300, 100:400]), (side, side), interpolation=cv2.INTER_AREA)


def pan_frames(n: int, h: int = 256, w: int = 320, side: int = 180, faces: int = 1) -> list[np.ndarray]:
    """n frames of `faces` copies of the face patch moving right over the texture (about 2 px a frame)."""
    bg, patch = background(h, w), face_patch(side)
    out = []
    for i in range(n):
        frame = bg.copy()
        for k in range(faces):
            x = int(round(4 + 2 * i)) % max(w - side, 1) + k * (side + 8)
            y = (h - side) // 2
            if x + side <= w:
                frame[y:y + side, x:x + side] = patch
        out.append(frame)
    return out


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    """A mono sine, (1, N) float32."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)[None]


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 25, audio: bool = True, codec: str = "libx264",
               rotation: int = 0, corrupt: tuple[int, ...] = ()) -> None:
    """Encode `frames` (H×W×3 uint8) at `fps`, with a 440 Hz AAC tone of the same length when `audio`.
    Packets of the frames in `corrupt` are replaced by garbage (use codec mjpeg: every frame is a keyframe)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=fps)
        v.width, v.height = w, h
        v.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        if rotation:
            v.set_display_rotation(rotation)
        a = out.add_stream("aac", rate=SAMPLE_RATE, layout="mono") if audio else None
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for packet in v.encode(frame):
                if packet.pts is not None and packet.pts in corrupt:
                    packet = _garbage(packet, v)
                out.mux(packet)
        out.mux(v.encode(None))
        if a is not None:
            samples = tone(len(frames) / fps)
            for s in range(0, samples.shape[1], 1024):
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, s:s + 1024]), format="fltp",
                                                layout="mono")
                af.sample_rate, af.pts, af.time_base = SAMPLE_RATE, s, Fraction(1, SAMPLE_RATE)
                out.mux(a.encode(af))
            out.mux(a.encode(None))


def _garbage(packet: av.Packet, stream: av.stream.Stream) -> av.Packet:
    bad = av.Packet(b"\xff\xd8corrupt" * 40)
    bad.pts, bad.dts, bad.time_base, bad.stream = packet.pts, packet.dts, packet.time_base, stream
    return bad


def decoded(path: Path) -> list[np.ndarray]:
    """Every frame of `path` as H×W×3 uint8 (coded orientation)."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def audio_packets(path: Path) -> list[bytes]:
    """The bytes of every audio packet of `path`."""
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(audio=0) if p.size]


class PatternRestorer:
    """Blends a fixed texture drawn in crop coordinates into each crop, as a real model's output is anchored
    to the alignment: when the landmarks jitter, this texture jitters in the frame. Deterministic. With
    `interrupt_after`, its call number `interrupt_after` raises KeyboardInterrupt (a Ctrl-C mid-run)."""

    def __init__(self, seed: int = 0, strength: float = 0.5, interrupt_after: int | None = None) -> None:
        g = torch.Generator().manual_seed(seed)
        small = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
        self.pattern = torch.nn.functional.interpolate(small, size=(512, 512), mode="bilinear", align_corners=False)
        self.strength = strength
        self.calls, self.interrupt_after = 0, interrupt_after

    def restore(self, x: torch.Tensor, w: float) -> torch.Tensor:
        self.calls += 1
        if self.interrupt_after is not None and self.calls >= self.interrupt_after:
            raise KeyboardInterrupt
        return (1 - self.strength) * x + self.strength * self.pattern.to(x.device)


def square_frames(n: int, h: int = 96, w: int = 128, side: int = 40, squares: int = 1, step: int = 2
                  ) -> list[np.ndarray]:
    """n frames of bright textured squares (stand-in faces) moving right by `step` px a frame over a dark
    texture."""
    bg = (background(h, w, seed=1) // 4).astype(np.uint8)
    face = (190 + background(side, side, seed=2) // 4).astype(np.uint8)  # values 200-240
    out = []
    for i in range(n):
        frame = bg.copy()
        for k in range(squares):
            x, y = 4 + step * i + k * (side + 8), (h - side) // 2
            frame[y:y + side, x:x + side] = face
        out.append(frame)
    return out


class SquareDetector:
    """Finds the bright squares of `square_frames` and returns each as a face: the FFHQ template fitted into its
    box, plus Gaussian landmark noise of `noise` px seeded by the box position (the same frame always gives
    the same answer, so reruns and resumes agree). Records the shape of every image it sees."""

    def __init__(self, noise: float = 0.0) -> None:
        self.noise = noise
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list:
        from codeformer.face.align import TEMPLATE_512
        from codeformer.face.detection import Face

        self.shapes.append(rgb.shape)
        mask = (rgb.min(axis=2) > 180).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        faces = []
        for x, y, w, h, area in stats[1:count]:
            if area < 100:
                continue
            rng = np.random.default_rng(int(x) * 1000 + int(y))
            points = TEMPLATE_512 / 512 * np.array([w, h]) + np.array([x, y])
            points = points + rng.normal(0.0, self.noise, size=(5, 2)) if self.noise else points
            faces.append(Face((float(x), float(y), float(x + w), float(y + h)), 1.0, points))
        return faces


class NoFaceDetector:
    """Finds nothing; records the shape of every image it sees."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list:
        self.shapes.append(rgb.shape)
        return []
