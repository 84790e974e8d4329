"""Face detection benchmark: recall, precision, false boxes, landmark error and speed of each offline detector on
seeded composed scenes with known faces (`benchmarks/detection_scenes.py`: sizes 40–600 px, tilts to ±40°, grey
and sepia, blur relative to the eye distance, noise, JPEG, cluttered backgrounds, hard negatives, face-free
scenes), plus the 1200×700 astronaut + mirrored Grace Hopper photo whose name badge is a known false face.

Each detector is called as `Restorer.detect` calls it: `filter_faces(detector.detect(rgb, min_face), min_face)`
with the CLI's default `--min-face 32`. A detection matches a ground-truth face when its box centre is within
0.4 face sizes of the true box centre and its size is within a factor 2 (one-to-one, best score first); every
other detection is a false box. NME: mean distance of the five points to the true ones / true eye distance, over
matched faces. s/MP: detection seconds per input megapixel, wall clock (the machine's load included) and CPU
time of this process (steadier on a shared machine; dlib runs on one thread here).

    .venv/bin/python benchmarks/detection.py                  # 48 scenes, every detector (~5 min idle 2-core)
    .venv/bin/python benchmarks/detection.py --quick          # 16 scenes
    .venv/bin/python benchmarks/detection.py --detectors hybrid hog --scenes 40 --seed 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # so `benchmarks.` imports when run as a script

from benchmarks.detection_scenes import HEAVY_BLUR, SIZE_BINS, TILT_BINS, Scene, badge_scene, make_scenes  # noqa: E402
from codeformer.face.detection import DETECTORS, Face, filter_faces, make_detector  # noqa: E402

MIN_FACE = 32.0  # the CLI's default --min-face
CENTRE_TOLERANCE = 0.4  # × true face size
SIZE_RATIO = 2.0


def match(faces: list[Face], truth: list) -> tuple[list[tuple[Face, object]], list[Face]]:
    """One-to-one matching, best score first: ([(detection, ground truth)], unmatched detections)."""
    free = list(range(len(truth)))
    pairs, false = [], []
    for face in sorted(faces, key=lambda f: -f.score):
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        best, best_d = None, None
        for i in free:
            g = truth[i]
            gx, gy = (g.box[0] + g.box[2]) / 2, (g.box[1] + g.box[3]) / 2
            d = float(np.hypot(cx - gx, cy - gy))
            if d <= CENTRE_TOLERANCE * g.size and 1 / SIZE_RATIO <= face.size / g.size <= SIZE_RATIO:
                if best_d is None or d < best_d:
                    best, best_d = i, d
        if best is None:
            false.append(face)
        else:
            free.remove(best)
            pairs.append((face, truth[best]))
    return pairs, false


def nme(face: Face, truth: object) -> float:
    """Mean five-point error / true eye distance."""
    return float(np.linalg.norm(face.landmarks5 - truth.landmarks5, axis=1).mean() / truth.eye_distance)


def size_bin(size: float) -> str:
    for lo, hi in SIZE_BINS:
        if size < hi:
            return f"{lo}–{hi} px"
    lo, hi = SIZE_BINS[-1]
    return f"{lo}–{hi} px"


def tilt_bin(tilt: float) -> str:
    for lo, hi in TILT_BINS:
        if abs(tilt) < hi:
            return f"tilt {lo}–{hi}°"
    return f"tilt {TILT_BINS[-1][0]}–{TILT_BINS[-1][1]}°"


def blur_bin(blur: float) -> str:
    if blur == 0:
        return "sharp"
    return "heavy blur" if blur > HEAVY_BLUR else "light blur"


@dataclass
class Result:
    """Counts per group: group → [found, total, sum of NME over found]; false boxes; time; badge outcome."""

    name: str
    groups: dict[str, list[float]] = field(default_factory=dict)
    true_positives: int = 0
    false_boxes: int = 0
    false_on_face_free: int = 0
    scenes: int = 0
    face_free_scenes: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    megapixels: float = 0.0
    nmes: list[float] = field(default_factory=list)
    found_by: dict[str, int] = field(default_factory=dict)
    badge: dict = field(default_factory=dict)

    def add(self, group: str, found: bool, error: float) -> None:
        g = self.groups.setdefault(group, [0, 0, 0.0])
        g[1] += 1
        if found:
            g[0] += 1
            g[2] += error

    def recall(self, group: str = "all") -> float:
        found, total, _ = self.groups.get(group, [0, 0, 0.0])
        return found / total if total else float("nan")

    def mean_nme(self, group: str = "all") -> float:
        found, _, total = self.groups.get(group, [0, 0, 0.0])
        return total / found if found else float("nan")

    @property
    def precision(self) -> float:
        detections = self.true_positives + self.false_boxes
        return self.true_positives / detections if detections else float("nan")

    @property
    def seconds_per_mp(self) -> float:
        return self.seconds / self.megapixels if self.megapixels else float("nan")

    @property
    def cpu_seconds_per_mp(self) -> float:
        return self.cpu_seconds / self.megapixels if self.megapixels else float("nan")

    def summary(self) -> dict:
        return {"detector": self.name, "recall": self.recall(), "precision": self.precision,
                "false_boxes_per_image": self.false_boxes / max(1, self.scenes),
                "false_boxes_per_face_free_image": self.false_on_face_free / max(1, self.face_free_scenes),
                "nme": self.mean_nme(), "nme_p90": float(np.percentile(self.nmes, 90)) if self.nmes else None,
                "seconds_per_mp": self.seconds_per_mp, "cpu_seconds_per_mp": self.cpu_seconds_per_mp,
                "found_by": self.found_by,
                "groups": {k: {"found": v[0], "total": v[1], "recall": v[0] / v[1] if v[1] else None,
                               "nme": v[2] / v[0] if v[0] else None} for k, v in self.groups.items()},
                "badge": self.badge}


def face_groups(g: object) -> list[str]:
    """The groups a ground-truth face is counted in."""
    groups = ["all", size_bin(g.size), tilt_bin(g.tilt), blur_bin(g.blur), g.colour]
    return groups


def evaluate(detector: object, scenes: list[Scene], name: str, min_face: float = MIN_FACE,
             badge: Scene | None = None, progress: bool = False) -> Result:
    """Run `detector` on every scene (and the badge photo) and tally the result."""
    result = Result(name)
    for scene in tqdm(scenes, desc=name, leave=False, disable=not progress):
        t0, c0 = time.perf_counter(), time.process_time()
        faces = filter_faces(detector.detect(scene.rgb, min_face=min_face), min_face=min_face)
        result.seconds += time.perf_counter() - t0
        result.cpu_seconds += time.process_time() - c0
        result.megapixels += scene.rgb.shape[0] * scene.rgb.shape[1] / 1e6
        pairs, false = match(faces, scene.faces)
        matched = {id(g): f for f, g in pairs}
        for g in scene.faces:
            face = matched.get(id(g))
            error = nme(face, g) if face is not None else 0.0
            for group in face_groups(g):
                result.add(group, face is not None, error)
            for group in (["noisy"] if scene.noise else []) + (["jpeg"] if scene.jpeg else []):
                result.add(group, face is not None, error)
            if face is not None:
                result.nmes.append(error)
                result.found_by[face.detector] = result.found_by.get(face.detector, 0) + 1
        result.true_positives += len(pairs)
        result.false_boxes += len(false)
        result.scenes += 1
        if not scene.faces:
            result.face_free_scenes += 1
            result.false_on_face_free += len(false)
    if badge is not None:
        faces = filter_faces(detector.detect(badge.rgb, min_face=min_face), min_face=min_face)
        pairs, false = match(faces, badge.faces)
        result.badge = {"found": len(pairs), "faces": len(badge.faces), "false_boxes": len(false),
                        "false": [{"box": [round(v) for v in f.box], "score": round(f.score, 3),
                                   "detector": f.detector} for f in false],
                        "nme": [round(nme(f, g), 4) for f, g in pairs]}
    return result


def table(result: Result) -> str:
    """Markdown table of one detector's result."""
    s = result.summary()
    lines = [f"**{result.name}** — recall {s['recall']:.3f}, precision {s['precision']:.3f}, false boxes/image "
             f"{s['false_boxes_per_image']:.3f} (face-free images {s['false_boxes_per_face_free_image']:.3f}), "
             f"NME {s['nme']:.4f} (p90 {s['nme_p90'] or float('nan'):.4f}), {s['seconds_per_mp']:.3f} s/MP "
             f"(CPU {s['cpu_seconds_per_mp']:.3f} s/MP); "
             f"badge photo: {result.badge.get('found', '?')}/{result.badge.get('faces', '?')} faces, "
             f"{result.badge.get('false_boxes', '?')} false; found by {s['found_by']}", "",
             "| group | faces | recall | NME |", "|---|---:|---:|---:|"]
    order = (["all"] + [size_bin(hi - 1) for _, hi in SIZE_BINS] + [tilt_bin(lo) for lo, _ in TILT_BINS]
             + ["sharp", "light blur", "heavy blur", "colour", "grey", "sepia", "noisy", "jpeg"])
    for group in order:
        if group not in result.groups:
            continue
        found, total, _ = result.groups[group]
        lines.append(f"| {group} | {total} | {found / total:.3f} | {result.mean_nme(group):.4f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", nargs="+", choices=DETECTORS, default=list(DETECTORS))
    parser.add_argument("--scenes", type=int, default=48, help="composed scenes (default 48)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="16 scenes")
    parser.add_argument("--min-face", type=float, default=MIN_FACE)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    count = 16 if args.quick else args.scenes
    scenes = make_scenes(count, args.seed)
    faces = sum(len(s.faces) for s in scenes)
    mp = sum(s.rgb.shape[0] * s.rgb.shape[1] for s in scenes) / 1e6
    print(f"{count} scenes (seed {args.seed}), {faces} faces, {sum(not s.faces for s in scenes)} face-free, "
          f"{mp:.1f} MP; min_face {args.min_face:g}\n")
    results = []
    for name in args.detectors:
        result = evaluate(make_detector(name), scenes, name, args.min_face, badge_scene(), progress=True)
        results.append(result)
        print(table(result) + "\n", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"scenes": count, "seed": args.seed, "faces": faces, "megapixels": mp,
                                               "results": [r.summary() for r in results]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
