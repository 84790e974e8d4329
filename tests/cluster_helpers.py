"""Stand-ins for the resume and cluster tests: a fast face detector, a small deterministic model that can kill its
own process, a small archive of photos, and `python -m tests.cluster_helpers local|ray ...` to run a restore in
a subprocess that the test can kill.

Everything here must be importable (and picklable) in Ray's worker processes.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

from codeformer.data.images import Picture, write_image
from codeformer.face.align import template
from codeformer.face.detection import Face


class TemplateDetector:
    """Finds faces where the geometry says, not where a face is: one centred square of half the short side, or,
    for a photo more than 1.6 times wider than tall, two (left and right halves). No face below 64 px."""

    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list[Face]:
        h, w = rgb.shape[:2]
        halves = [(0, w // 2), (w // 2, w)] if w > 1.6 * h else [(0, w)]
        faces = []
        for x_start, x_end in halves:
            side = min(h, x_end - x_start) / 2
            if side < 32:
                continue
            x0, y0 = x_start + (x_end - x_start - side) / 2, (h - side) / 2
            points = template() / 512.0 * side + np.array([x0, y0])
            faces.append(Face((x0, y0, x0 + side, y0 + side), 1.0, points))
        return faces


def make_detector() -> TemplateDetector:
    return TemplateDetector()


class FaceConv:
    """A fixed, seeded 3×3 convolution plus a colour shift, applied one face at a time (so a face's result does
    not depend on its batch). With `die_after` and `marker`: SIGKILLs its own process when its `die_after`-th face
    arrives, once (the marker file says it happened; it is written before the kill)."""

    def __init__(self, seed: int = 0, die_after: int = 0, marker: str | None = None, delay: float = 0.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(3, 3, 3, 3, generator=g) * 0.2
        self.weight[:, :, 1, 1] += torch.eye(3) * 0.5
        self.die_after, self.marker, self.delay = die_after, marker, delay
        self.faces = 0

    def restore(self, x: torch.Tensor, w: float) -> torch.Tensor:
        out = []
        for face in x:
            self.faces += 1
            if self.die_after and self.faces >= self.die_after and self.marker and not os.path.exists(self.marker):
                Path(self.marker).write_text(f"{os.getpid()}\n")
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(self.delay)
            y = torch.nn.functional.conv2d(face[None], self.weight, padding=1) * (1.0 - 0.5 * w)
            out.append(y + torch.tensor([0.3, -0.1, 0.0]).view(1, 3, 1, 1))
        return torch.cat(out)


class FaceConvSource:
    """A `codeformer.cluster.engine.ModelSource` for `FaceConv`: each actor loads its own."""

    def __init__(self, seed: int = 0, die_after: int = 0, marker: str | None = None, delay: float = 0.0) -> None:
        self.seed, self.die_after, self.marker, self.delay = seed, die_after, marker, delay

    def load(self) -> FaceConv:
        return FaceConv(self.seed, self.die_after, self.marker, self.delay)

    def check(self, progress: bool = True) -> None:
        """Nothing to verify: the stand-in has no weights file (`ModelSpec.check` loads the real one)."""

    def identity(self) -> dict[str, object]:
        return {"model": "face-conv", "seed": self.seed}


def texture(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random H×W×3 uint8 picture."""
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 220, size=(max(h // 8, 2), max(w // 8, 2), 3)).astype(np.uint8)
    import cv2

    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def make_archive(folder: Path, n: int = 6) -> list[Path]:
    """`n` small photos in `folder` (and a subfolder): PNG and JPEG, one grey, one RGBA, one wide with two faces,
    one too small for a face. Returns their paths."""
    shapes = [(96, 80), (120, 112), (88, 200), (100, 100), (40, 40), (128, 96), (72, 90), (110, 120)]
    paths = []
    for i in range(n):
        h, w = shapes[i % len(shapes)]
        pixels = texture(h, w, seed=i)
        name = f"photo{i:02d}.png" if i % 2 == 0 else f"photo{i:02d}.jpg"
        if i == 3:
            pixels = pixels[..., :1]
        if i == 5:
            pixels = np.concatenate([pixels, np.full((h, w, 1), 200, np.uint8)], axis=2)
            name = f"photo{i:02d}.png"
        path = folder / ("sub" if i % 3 == 2 else "") / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, Picture(np.ascontiguousarray(pixels), is_grey=pixels.shape[2] == 1))
        paths.append(path)
    return paths


def _run_local(argv: list[str]) -> int:
    """`codeformer restore ARGV` with the stand-ins (the model dies at face $DIE_AFTER, once, if set)."""
    import codeformer.backends
    import codeformer.face.detection
    from codeformer.cli import main

    die = int(os.environ.get("DIE_AFTER", "0"))
    model = FaceConv(die_after=die, marker=os.environ.get("DIE_MARKER"))
    codeformer.backends.load_face_model = lambda *a, **k: (model, {"runtime": "torch"})
    codeformer.face.detection.make_detector = lambda name="hybrid": TemplateDetector()
    return main(["restore", *argv])


def _run_ray(argv: list[str]) -> int:
    """`restore_archive(SRC, -> OUT)` on the Ray cluster at ADDRESS with the stand-ins (a slow model)."""
    from codeformer.cluster import ClusterOptions, restore_archive
    from codeformer.face.batch import OutputOptions

    address, src, out = argv
    cluster = ClusterOptions(address=address, workers=1, photos_per_call=1)
    report = restore_archive([src], FaceConvSource(delay=1.0), OutputOptions(Path(out), recursive=True),
                             cluster=cluster, detector=make_detector, progress=False)
    print(report.summary(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    kind, rest = sys.argv[1], sys.argv[2:]
    sys.exit(_run_local(rest) if kind == "local" else _run_ray(rest))
