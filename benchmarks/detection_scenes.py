"""Seeded scenes with known faces for the detection benchmark (`benchmarks/detection.py`) and its tests.

Each scene is a canvas with a cluttered background (textures, text, badges, LFW non-face crops, drawn faces,
partial faces) on which whole face patches cut from the two real photos (`astronaut.png`, `grace_hopper.jpg`) are
placed with a known similarity transform: scaled to a face size of 40–600 px, turned by up to ±40°, optionally
mirrored, turned grey or sepia, and blurred by a Gaussian whose σ is a fraction of the placed eye distance. The
whole scene may then get Gaussian noise and JPEG compression. Some scenes have no face at all.

Ground truth. The five points and face box of each source photo are constants below, measured once with dlib's
68-point model (reduced to the FFHQ five) and HOG box on the clean, full-resolution photo: a sharp, frontal,
upright face of 130–190 px, the case that model is trained for. On `astronaut.png` they agree with the fixed
landmarks of the official pipeline's parity kit (`shared/parity/pipeline`, `fh_landmarks5`) to within 2.6 px, i.e.
0.06 eye distances (both are estimates; the official kit's come from another detector). A scene's ground truth is
those points pushed through the exact transform that placed the patch, so it is as good as the clean-photo
estimate whatever the blur, tilt or noise; a detector is scored on how close it gets on the degraded scene to
what dlib says on the clean photo. `tests/test_detection_bench.py` re-measures the constants.

Usage: `make_scenes(n, seed)` → list of `Scene`; `badge_scene()` → the 1200×700 astronaut + mirrored Grace Hopper
photo whose name badge is a known false face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from codeformer.data.images import read_image

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def shared_data() -> Path:
    """The shared data folder (`../shared/data` beside the repository, or above a worktree folder)."""
    for root in (REPO.parent, REPO.parent.parent):
        if (root / "shared" / "data" / "lfw_subset.npz").is_file():
            return root / "shared" / "data"
    raise FileNotFoundError(f"lfw_subset.npz: not found in ../shared/data or ../../shared/data beside {REPO}")


@dataclass(frozen=True)
class Source:
    """A real photo with its face: five points (FFHQ order, px) and the dlib HOG box (x0, y0, x1, y1)."""

    file: str
    landmarks5: tuple[tuple[float, float], ...]
    box: tuple[float, float, float, float]


# Measured with codeformer.face.detection.DlibDetector (HOG, 68 → 5 points) on the clean photos; see the docstring.
SOURCES = (
    Source("astronaut.png", ((203.63, 101.37), (246.57, 103.63), (224.7, 127.1), (200.7, 139.1), (245.5, 140.7)),
           (174.4, 76.0, 264.8, 166.4)),
    Source("grace_hopper.jpg", ((223.37, 193.23), (305.23, 189.1), (268.7, 237.5), (231.9, 279.9), (300.7, 275.9)),
           (179.2, 138.4, 364.8, 324.8)),
)
PATCH_FACTOR = 1.7  # a face patch is a square this many face-box sides wide around the box centre
SIZE_BINS = ((40, 64), (64, 128), (128, 256), (256, 600))
TILT_BINS = ((0, 10), (10, 25), (25, 40))
HEAVY_BLUR = 0.05  # σ above this fraction of the eye distance is "heavy" (the definition)
WORDS = ("NASA", "ID 4471", "VISITOR", "Collins", "HOPPER", "Navy", "1984", "Expo", "STAFF", "Hello my name is",
         "PRESS", "Mission STS-93", "Q&A", "Room 12", "exit", "Lot 7", "Crew", "ACCESS")


@dataclass
class GroundTruthFace:
    """One placed face: box (x0, y0, x1, y1) and five points (5, 2) in scene px, and how it was made."""

    box: tuple[float, float, float, float]
    landmarks5: np.ndarray = field(repr=False)
    size: float  # box side, px
    tilt: float  # degrees, positive = turned anticlockwise in the image
    blur: float  # Gaussian σ / eye distance
    colour: str  # colour | grey | sepia
    source: str
    mirrored: bool

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks5[1] - self.landmarks5[0]))


@dataclass
class Scene:
    """A benchmark image (H×W×3 uint8 RGB), its faces, and the scene-wide degradations."""

    name: str
    rgb: np.ndarray = field(repr=False)
    faces: list[GroundTruthFace]
    noise: float  # Gaussian noise σ in 8-bit levels (0 = none)
    jpeg: int  # JPEG quality (0 = not compressed)
    negatives: list[str] = field(default_factory=list)  # hard negatives drawn on it


def load_sources() -> list[np.ndarray]:
    """The source photos as H×W×3 uint8 RGB, in `SOURCES` order."""
    return [np.ascontiguousarray(read_image(EXAMPLES / s.file).pixels[:, :, :3]) for s in SOURCES]


def load_lfw_nonfaces() -> np.ndarray:
    """LFW non-face crops (100, 25, 25) uint8 grey."""
    with np.load(shared_data() / "lfw_subset.npz") as z:
        return z["nonfaces"].astype(np.uint8)


# ---------------------------------------------------------------------------------------------------- background


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """H×W float32 in [0, 1]: uniform noise on a coarse grid, enlarged smoothly."""
    small = rng.random((max(2, h // cell), max(2, w // cell))).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured H×W×3 uint8 canvas: smooth colour noise, then stripes, checks or wood grain at random."""
    base = rng.integers(40, 215, 3).astype(np.float32)
    canvas = np.stack([_smooth_noise(rng, h, w, int(rng.integers(40, 200))) for _ in range(3)], axis=2)
    canvas = base + (canvas - 0.5) * rng.uniform(30, 120)
    kind = rng.integers(0, 4)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 1:  # stripes
        angle = rng.uniform(0, math.pi)
        period = rng.uniform(6, 40)
        wave = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
        canvas += wave[..., None] * rng.uniform(10, 50)
    elif kind == 2:  # checks
        cell = int(rng.integers(8, 60))
        check = ((xx // cell + yy // cell) % 2) * 2 - 1
        canvas += check[..., None] * rng.uniform(10, 40)
    elif kind == 3:  # wood grain / fabric
        warp = _smooth_noise(rng, h, w, 80) * 30
        canvas += np.sin((yy + warp) / rng.uniform(2, 8))[..., None] * rng.uniform(8, 30)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def draw_text(rng: np.random.Generator, canvas: np.ndarray, count: int) -> None:
    """`count` random words in random sizes and colours, in place."""
    h, w = canvas.shape[:2]
    for _ in range(count):
        word = WORDS[rng.integers(len(WORDS))]
        scale = float(rng.uniform(0.5, 3.0))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        org = (int(rng.integers(0, max(1, w - 50))), int(rng.integers(20, h)))
        cv2.putText(canvas, word, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, max(1, round(scale * 2)),
                    cv2.LINE_AA)


def draw_badge(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """A name badge: a light rounded card with a photo-like dark blob, lines of text and a round logo."""
    h, w = canvas.shape[:2]
    bw = int(rng.integers(80, 260))
    bh = int(bw * rng.uniform(0.55, 0.75))
    x0, y0 = int(rng.integers(0, max(1, w - bw))), int(rng.integers(0, max(1, h - bh)))
    cv2.rectangle(canvas, (x0, y0), (x0 + bw, y0 + bh), tuple(int(c) for c in rng.integers(200, 256, 3)), -1)
    cv2.rectangle(canvas, (x0, y0), (x0 + bw, y0 + bh), (30, 30, 90), 2)
    r = bh // 5
    cv2.circle(canvas, (x0 + bw - r - 6, y0 + r + 6), r, (20, 40, 160), -1)
    cv2.circle(canvas, (x0 + bw - r - 6, y0 + r + 6), r // 2, (230, 230, 230), -1)
    for k in range(3):
        word = WORDS[rng.integers(len(WORDS))]
        cv2.putText(canvas, word, (x0 + 8, y0 + (k + 1) * bh // 4 + 4), cv2.FONT_HERSHEY_SIMPLEX,
                    bh / 160, (10, 10, 10), 1, cv2.LINE_AA)


def draw_cartoon_face(rng: np.random.Generator, canvas: np.ndarray) -> None:
    """A drawn face (hard negative): a skin-coloured disc with two eyes, a nose line and a smile."""
    h, w = canvas.shape[:2]
    r = int(rng.integers(25, min(160, h // 3)))
    cx, cy = int(rng.integers(r, max(r + 1, w - r))), int(rng.integers(r, max(r + 1, h - r)))
    skin = (int(rng.integers(200, 256)), int(rng.integers(150, 210)), int(rng.integers(110, 170)))
    cv2.circle(canvas, (cx, cy), r, skin, -1, cv2.LINE_AA)
    cv2.circle(canvas, (cx, cy), r, (60, 40, 30), max(1, r // 20), cv2.LINE_AA)
    for side in (-1, 1):
        cv2.ellipse(canvas, (cx + side * r * 2 // 5, cy - r // 5), (max(2, r // 8), max(2, r // 6)), 0, 0, 360,
                    (30, 30, 30), -1, cv2.LINE_AA)
        cv2.line(canvas, (cx + side * r * 2 // 5 - r // 6, cy - r * 9 // 20),
                 (cx + side * r * 2 // 5 + r // 6, cy - r * 9 // 20), (60, 40, 20), max(1, r // 15), cv2.LINE_AA)
    cv2.line(canvas, (cx, cy - r // 10), (cx - r // 12, cy + r // 6), (120, 70, 50), max(1, r // 25), cv2.LINE_AA)
    cv2.ellipse(canvas, (cx, cy + r // 4), (r // 2, r // 4), 0, 10, 170, (90, 20, 20), max(1, r // 15), cv2.LINE_AA)


def paste_lfw_nonface(rng: np.random.Generator, canvas: np.ndarray, crops: np.ndarray) -> None:
    """One LFW non-face crop (grey), enlarged to 40–160 px, pasted at random."""
    h, w = canvas.shape[:2]
    side = int(rng.integers(40, min(160, h, w)))
    crop = cv2.resize(crops[rng.integers(len(crops))], (side, side), interpolation=cv2.INTER_CUBIC)
    x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
    canvas[y0:y0 + side, x0:x0 + side] = crop[..., None]


def paste_partial_face(rng: np.random.Generator, canvas: np.ndarray, sources: list[np.ndarray]) -> None:
    """Less than half a face (hard negative): the mouth and chin below the nose, or one eye and its brow."""
    k = int(rng.integers(len(SOURCES)))
    src, meta = sources[k], SOURCES[k]
    (lx, ly), (rx, ry), (nx, ny), _, _ = meta.landmarks5
    x0, y0, x1, y1 = meta.box
    if rng.random() < 0.5:
        region = src[int(ny + 8):int(y1 + 10), int(x0):int(x1)]
    else:
        ed = rx - lx
        region = src[int(ly - 0.6 * ed):int(ly + 0.35 * ed), int(lx - 0.5 * ed):int(lx + 0.45 * ed)]
    h, w = canvas.shape[:2]
    scale = float(rng.uniform(0.6, 2.5))
    region = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else
                        cv2.INTER_CUBIC)
    rh, rw = region.shape[:2]
    if rh >= h or rw >= w:
        return
    px, py = int(rng.integers(0, w - rw)), int(rng.integers(0, h - rh))
    canvas[py:py + rh, px:px + rw] = region


# ---------------------------------------------------------------------------------------------------- faces


def _source_points(k: int, mirrored: bool, width: int) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """Five points and box of source `k`, for the photo as given or mirrored (points re-ordered so the
    smaller-x eye and mouth corner come first)."""
    pts = np.array(SOURCES[k].landmarks5, np.float64)
    x0, y0, x1, y1 = SOURCES[k].box
    if not mirrored:
        return pts, (x0, y0, x1, y1)
    pts = pts.copy()
    pts[:, 0] = width - 1 - pts[:, 0]
    return pts[[1, 0, 2, 4, 3]], (width - x1, y0, width - x0, y1)


def tone(rgb: np.ndarray, colour: str) -> np.ndarray:
    """Colour as is, Rec. 601 grey, or sepia (grey tinted brown); uint8 in and out."""
    if colour == "colour":
        return rgb
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if colour == "grey":
        return np.repeat(np.rint(luma)[..., None], 3, axis=2).astype(np.uint8)
    sepia = luma[..., None] * np.array([1.07, 0.95, 0.74], np.float32) + np.array([12, 6, 0], np.float32)
    return np.clip(np.rint(sepia), 0, 255).astype(np.uint8)


def place_face(canvas: np.ndarray, src: np.ndarray, k: int, centre: tuple[float, float], size: float, tilt: float,
               mirrored: bool, blur: float, colour: str) -> GroundTruthFace:
    """Paste a square patch around source `k`'s face onto `canvas` (in place) so its face box has side `size`
    px, centred at `centre`, turned by `tilt` degrees; returns the ground truth in canvas px."""
    if mirrored:
        src = np.ascontiguousarray(src[:, ::-1])
    pts, (x0, y0, x1, y1) = _source_points(k, mirrored, src.shape[1])
    scale = size / (x1 - x0)
    box_centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    m = cv2.getRotationMatrix2D(box_centre, tilt, scale)  # source → canvas: turn and scale about the box centre
    m[:, 2] += np.array(centre) - np.array(box_centre)
    half = PATCH_FACTOR * size / 2
    cx, cy = centre
    h, w = canvas.shape[:2]
    reach = int(math.ceil(half * math.sqrt(2))) + 2
    ax0, ay0 = max(0, int(cx) - reach), max(0, int(cy) - reach)
    ax1, ay1 = min(w, int(cx) + reach), min(h, int(cy) + reach)
    shift = np.array([[0, 0, -ax0], [0, 0, -ay0]], np.float64)
    local = m + shift
    interp = cv2.INTER_AREA if scale < 0.7 else cv2.INTER_CUBIC
    if scale < 0.7:  # shrink with an area filter first so the rotation does not alias
        pre = cv2.resize(src, None, fx=scale / 0.7 * 1.0, fy=scale / 0.7, interpolation=cv2.INTER_AREA)
        f = pre.shape[1] / src.shape[1], pre.shape[0] / src.shape[0]
        local = local @ np.diag([1 / f[0], 1 / f[1], 1.0])
        src_used = pre
        interp = cv2.INTER_LINEAR
    else:
        src_used = src
    size_out = (ax1 - ax0, ay1 - ay0)
    patch = cv2.warpAffine(src_used, local, size_out, flags=interp, borderMode=cv2.BORDER_REFLECT_101)
    # The patch's square window, turned with the face, as an anti-aliased mask.
    window = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    theta = math.radians(tilt)
    rot = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
    corners = window @ rot.T + np.array([cx - ax0, cy - ay0])
    mask = np.zeros((size_out[1], size_out[0]), np.uint8)
    cv2.fillConvexPoly(mask, np.rint(corners * 16).astype(np.int32), 255, cv2.LINE_AA, shift=4)
    ground = transform(pts, m)
    eye_distance = float(np.linalg.norm(ground[1] - ground[0]))
    patch = tone(patch, colour)
    if blur > 0:
        patch = cv2.GaussianBlur(patch, (0, 0), blur * eye_distance)
    alpha = mask.astype(np.float32)[..., None] / 255.0
    region = canvas[ay0:ay1, ax0:ax1].astype(np.float32)
    canvas[ay0:ay1, ax0:ax1] = np.rint(region * (1 - alpha) + patch.astype(np.float32) * alpha).astype(np.uint8)
    s2 = size / 2
    return GroundTruthFace((cx - s2, cy - s2, cx + s2, cy + s2), ground, float(size), float(tilt), float(blur),
                           colour, SOURCES[k].file, mirrored)


def transform(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(N, 2) points through a 2×3 affine."""
    return points @ m[:, :2].T + m[:, 2]


def _draw_size(rng: np.random.Generator, bin_index: int) -> float:
    lo, hi = SIZE_BINS[bin_index]
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _draw_tilt(rng: np.random.Generator) -> float:
    lo, hi = TILT_BINS[int(rng.integers(len(TILT_BINS)))]
    return float(rng.uniform(lo, hi) * rng.choice([-1, 1]))


def _draw_blur(rng: np.random.Generator) -> float:
    u = rng.random()
    if u < 0.4:
        return 0.0
    if u < 0.65:
        return float(rng.uniform(0.015, HEAVY_BLUR))
    return float(rng.uniform(HEAVY_BLUR, 0.12))


def degrade(rng: np.random.Generator, rgb: np.ndarray) -> tuple[np.ndarray, float, int]:
    """Scene-wide noise (σ 0, 4, 8 or 12 levels) and JPEG (none, 75, 50, 30); returns (image, σ, quality)."""
    noise = float(rng.choice([0.0, 0.0, 4.0, 8.0, 12.0]))
    quality = int(rng.choice([0, 0, 75, 50, 30]))
    out = rgb
    if noise:
        out = np.clip(out.astype(np.float32) + rng.normal(0, noise, out.shape).astype(np.float32), 0, 255)
        out = np.rint(out).astype(np.uint8)
    if quality:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert ok
        out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out, noise, quality


CANVASES = ((800, 600), (1024, 768), (1280, 720), (1200, 900), (1600, 1000), (1920, 1080), (2400, 1600))


def make_scene(rng: np.random.Generator, name: str, sources: list[np.ndarray], nonfaces: np.ndarray,
               with_faces: bool = True, canvases: tuple[tuple[int, int], ...] = CANVASES) -> Scene:
    """One random scene (see the module docstring). Face sizes are drawn first (a size bin uniformly, then
    log-uniform inside it) and the canvas is one that holds the largest; faces are placed largest first."""
    sizes = sorted((_draw_size(rng, int(rng.integers(len(SIZE_BINS)))) for _ in range(int(rng.integers(1, 5)))),
                   reverse=True) if with_faces else []
    fits = [c for c in canvases if not sizes or min(c) >= 1.25 * sizes[0]] or [max(canvases, key=min)]
    if sizes and min(fits[0]) < 1.25 * sizes[0]:  # only small canvases allowed: shrink the faces to fit
        sizes = [min(s, min(fits[0]) / 1.25) for s in sizes]
    w, h = fits[int(rng.integers(len(fits)))]
    canvas = background(rng, h, w)
    for _ in range(int(rng.integers(1, 5))):
        paste_lfw_nonface(rng, canvas, nonfaces)
    draw_text(rng, canvas, int(rng.integers(2, 8)))
    negatives = []
    for _ in range(int(rng.integers(0, 3))):
        draw_badge(rng, canvas)
        negatives.append("badge")
    if rng.random() < 0.5:
        draw_cartoon_face(rng, canvas)
        negatives.append("drawn face")
    if rng.random() < 0.5:
        paste_partial_face(rng, canvas, sources)
        negatives.append("partial face")
    faces: list[GroundTruthFace] = []
    taken: list[tuple[float, float, float]] = []  # (cx, cy, radius) of placed patches
    for size in sizes:
        radius = PATCH_FACTOR * size / 2 * math.sqrt(2)
        for _attempt in range(40):
            # the face box stays inside the image; the patch may be cut by the border
            cx = float(rng.uniform(size * 0.6, w - size * 0.6))
            cy = float(rng.uniform(size * 0.6, h - size * 0.6))
            if all(math.hypot(cx - ox, cy - oy) > 0.75 * (radius + r) for ox, oy, r in taken):
                break
        else:
            continue  # no room left: the scene has fewer faces
        k = int(rng.integers(len(SOURCES)))
        colour = str(rng.choice(["colour", "colour", "grey", "sepia"]))
        faces.append(place_face(canvas, sources[k], k, (cx, cy), size, _draw_tilt(rng), bool(rng.random() < 0.5),
                                _draw_blur(rng), colour))
        taken.append((cx, cy, radius))
    rgb, noise, quality = degrade(rng, canvas)
    return Scene(name, rgb, faces, noise, quality, negatives)


def make_scenes(count: int, seed: int = 0, face_free: float = 0.2,
                canvases: tuple[tuple[int, int], ...] = CANVASES) -> list[Scene]:
    """`count` scenes from `seed`; about `face_free` of them have no face; canvas sizes (w, h) drawn from
    `canvases` (faces shrink to fit the largest when none holds them). Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    sources, nonfaces = load_sources(), load_lfw_nonfaces()
    return [make_scene(rng, f"scene{i:03d}", sources, nonfaces, bool(rng.random() >= face_free), canvases)
            for i in range(count)]


def badge_scene() -> Scene:
    """1200×700: `astronaut.png` and a mirrored `grace_hopper.jpg` side by side on grey; two faces."""
    astro, grace = load_sources()
    canvas = np.full((700, 1200, 3), 128, np.uint8)
    ax, ay, gx, gy = 40, 94, 648, 50
    canvas[ay:ay + 512, ax:ax + 512] = astro
    canvas[gy:gy + 600, gx:gx + 512] = grace[:, ::-1]
    faces = []
    for k, (ox, oy, mirrored) in enumerate(((ax, ay, False), (gx, gy, True))):
        pts, (x0, y0, x1, y1) = _source_points(k, mirrored, 512)
        shift = np.array([ox, oy], np.float64)
        faces.append(GroundTruthFace((x0 + ox, y0 + oy, x1 + ox, y1 + oy), pts + shift, x1 - x0, 0.0, 0.0,
                                     "colour", SOURCES[k].file, mirrored))
    return Scene("badge", canvas, faces, 0.0, 0)
