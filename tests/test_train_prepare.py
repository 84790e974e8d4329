"""`codeformer prepare-faces`: photos → aligned training crops that the training dataset reads."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from codeformer.cli import main
from codeformer.data.dataset import FaceFolderDataset
from codeformer.data.images import read_image
from tests.conftest import DATA


def test_prepare_faces_aligns_and_skips_bad_files(tmp_path: Path, capsys):
    src = tmp_path / "photos"
    src.mkdir()
    shutil.copy(DATA / "astronaut.png", src / "astronaut.png")
    shutil.copy(DATA / "grace_hopper.jpg", src / "grace_hopper.jpg")
    (src / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "crops"
    assert main(["prepare-faces", str(src), "-o", str(out), "--size", "256", "--faces", "largest"]) == 0
    err = capsys.readouterr().err
    assert "broken.jpg" in err and "3 photos: 2 face crops" in err
    crops = sorted(p.name for p in out.iterdir())
    assert crops == ["astronaut_0.png", "grace_hopper_0.png"]
    pixels = read_image(out / "astronaut_0.png").pixels
    assert pixels.shape == (256, 256, 3) and pixels.dtype == np.uint8
    assert len(FaceFolderDataset(out, size=32, flip=False)) == 2  # ready for the tiny configs
