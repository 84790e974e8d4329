"""`codeformer evaluate` and the folder evaluation: pairing by stem, missing pairs, protocol, JSON/markdown."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from codeformer.cli import main
from codeformer.data.images import Picture, write_image
from codeformer.metrics import fid
from codeformer.metrics.evaluate import Metrics, evaluate_folders, image_files
from codeformer.metrics.fid import FIDInceptionV3
from codeformer.metrics.fidelity import LPIPSMetric, psnr
from codeformer.models.lpips import LPIPS
from tests.face_helpers import ASTRONAUT, load_rgb


def _folders(root: Path) -> tuple[Path, Path, Path]:
    """restored/ (a, b, extra), reference/ (a, b, only_ref), lq/ (a, b): 48×48 patches; a is restored exactly."""
    photo = load_rgb(ASTRONAUT)
    dirs = [root / name for name in ("restored", "reference", "lq")]
    for d in dirs:
        d.mkdir()
    rng = np.random.default_rng(0)
    for i, name in enumerate(("a", "b", "extra", "only_ref")):
        ref = np.ascontiguousarray(photo[40 * i:40 * i + 48, 100:148])
        noisy = np.clip(ref + rng.normal(0, 8, ref.shape), 0, 255).astype(np.uint8)
        restored = ref if name == "a" else noisy
        if name != "only_ref":
            write_image(dirs[0] / f"{name}.png", Picture(restored))
        if name != "extra":
            write_image(dirs[1] / f"{name}.png", Picture(ref))
        if name in ("a", "b"):
            write_image(dirs[2] / f"{name}.jpg", Picture(cv2.resize(ref, (24, 24), interpolation=cv2.INTER_AREA)))
    return dirs[0], dirs[1], dirs[2]


def test_evaluate_cli_with_missing_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEFORMER_OFFLINE", "1")
    monkeypatch.setenv("CODEFORMER_HOME", str(tmp_path / "home"))
    restored, reference, lq = _folders(tmp_path)
    out = tmp_path / "out"
    rc = main(["evaluate", "--restored", str(restored), "--reference", str(reference), "--lq", str(lq),
               "-o", str(out), "--no-identity", "--no-progress"])
    assert rc == 0
    doc = json.loads((out / "metrics.json").read_text())
    names = {rec["name"]: rec for rec in doc["images"]}
    assert set(names) == {"a", "b", "extra"}
    assert names["a"]["metrics"]["psnr_rgb"] == "inf" and names["a"]["metrics"]["ssim_y"] == pytest.approx(1.0)
    assert 20 < names["b"]["metrics"]["psnr_rgb"] < 40
    assert "psnr_rgb" not in names["extra"]["metrics"] and "sharpness" in names["extra"]["metrics"]
    assert any("extra.png: no reference" in m for m in doc["missing"])
    assert any("only_ref.png: reference image has no restored" in m for m in doc["missing"])
    protocol = doc["protocol"]
    assert protocol["sizes"] == {"restored": ["48x48"], "reference": ["48x48"], "lq": ["24x24"]}
    assert "offline" in protocol["skipped"]["lpips"] and "offline" in protocol["skipped"]["fid"]
    assert "identity" in protocol["skipped"] and "scikit-image" in protocol["definitions"]["ssim"]
    assert doc["summary"]["psnr_rgb"]["n"] == 2 and doc["summary"]["psnr_rgb"]["infinite"] == 1
    md = (out / "metrics.md").read_text()
    assert "## Protocol" in md and "| b |" in md and "## Missing pairs" in md and "crop_border" in md


def test_evaluate_folders_with_lpips_and_fid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    restored, reference, _ = _folders(tmp_path)
    monkeypatch.setattr(fid, "FID_INPUT_SIZE", 75)  # the smallest input Inception takes: keeps the test short
    torch.manual_seed(0)
    metrics = Metrics(lpips=LPIPSMetric(LPIPS()), fid=FIDInceptionV3())
    result = evaluate_folders(restored, reference, None, metrics)
    by_name = {rec["name"]: rec["metrics"] for rec in result.images}
    assert by_name["a"]["lpips"] == pytest.approx(0.0, abs=1e-6) and by_name["b"]["lpips"] > 0
    assert result.dataset["fid"] >= 0 and result.dataset["fid_n_restored"] == 3
    assert result.errors == [] and "fid" not in metrics.skipped


def test_size_mismatch_and_bad_file_are_reported(tmp_path: Path) -> None:
    restored, reference, _ = _folders(tmp_path)
    write_image(reference / "b.png", Picture(np.zeros((50, 48, 3), np.uint8)))
    (restored / "extra.png").write_bytes(b"broken")
    result = evaluate_folders(restored, reference, None, Metrics())
    notes = {rec["name"]: rec.get("note", "") for rec in result.images}
    assert "size differs" in notes["b"]
    assert len(result.errors) == 1 and result.errors[0].startswith("extra")
    (restored / "a.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="stem 'a'"):
        image_files(restored)


def test_psnr_of_written_pair_matches_direct(tmp_path: Path) -> None:
    restored, reference, _ = _folders(tmp_path)
    result = evaluate_folders(restored, reference, None, Metrics())
    b = next(rec for rec in result.images if rec["name"] == "b")
    direct = psnr(load_rgb(restored / "b.png"), load_rgb(reference / "b.png"))
    assert b["metrics"]["psnr_rgb"] == pytest.approx(direct, abs=1e-12)


def test_identity_without_a_face_is_a_note_not_a_number(tmp_path):
    """No face in an image: no identity score for a region no detector saw (the landmark metric's rule)."""
    from codeformer.metrics.evaluate import _evaluate_one
    from codeformer.metrics.identity import IdentityEmbedder, NoFaceFound

    embedder = IdentityEmbedder.load()
    wall = np.full((256, 256, 3), 128, np.uint8) + np.random.default_rng(0).integers(0, 8, (256, 256, 3), np.uint8)
    assert embedder.find_box(wall) is None
    with pytest.raises(NoFaceFound, match="first"):
        embedder.compare(wall, wall)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    write_image(a, Picture(wall))
    write_image(b, Picture(wall))
    record = _evaluate_one("a", a, b, b, Metrics(identity=embedder), 0, {"restored": set(), "reference": set(),
                                                                         "lq": set()})
    assert not any(key.startswith("identity") for key in record["metrics"])
    assert "identity: no face found in the restored" in record["note"]
    assert "identity (lq): no face found in the restored" in record["note"]
