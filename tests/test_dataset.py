"""Tests for codeformer.data.dataset on a tiny folder made from the shared photos and LFW crops."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from codeformer.data.dataset import FaceFolderDataset, load_codes, save_codes
from codeformer.data.degradation import LARGE, SMALL

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZE = 32


@pytest.fixture()
def faces(tmp_path: Path) -> Path:
    """A folder with 2 photos (png, jpg) and 4 LFW crops (grey png, in a subfolder, one as webp, one 16-bit)."""
    root = tmp_path / "faces"
    (root / "lfw").mkdir(parents=True)
    shutil.copy(DATA / "astronaut.png", root / "astronaut.png")
    shutil.copy(DATA / "grace_hopper.jpg", root / "grace_hopper.JPG")
    with np.load(DATA / "lfw_subset.npz") as z:
        crops = z["faces"][:4]
    cv2.imwrite(str(root / "lfw" / "lfw0.png"), crops[0])
    cv2.imwrite(str(root / "lfw" / "lfw1.png"), cv2.resize(crops[1], (64, 64), interpolation=cv2.INTER_CUBIC))
    cv2.imwrite(str(root / "lfw" / "lfw2.webp"), crops[2])
    cv2.imwrite(str(root / "lfw" / "lfw3.png"), crops[3].astype(np.uint16) * 257)
    (root / "notes.txt").write_text("not an image")
    return root


def _dataset(root: Path, **kwargs) -> FaceFolderDataset:
    kwargs.setdefault("degradations", {"large": LARGE, "small": SMALL})
    return FaceFolderDataset(root, size=SIZE, **kwargs)


def _assert_items_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def test_finds_images_recursively(faces: Path) -> None:
    ds = _dataset(faces)
    assert len(ds) == 6
    assert [p.name for p in ds.files] == ["astronaut.png", "grace_hopper.JPG", "lfw0.png", "lfw1.png",
                                         "lfw2.webp", "lfw3.png"]


def test_item_shapes_and_ranges(faces: Path) -> None:
    ds = _dataset(faces)
    for i in range(len(ds)):
        item = ds[i]
        assert set(item) == {"hq", "lq_large", "lq_small", "flipped"}
        assert isinstance(item["flipped"], bool)
        for key in ("hq", "lq_large", "lq_small"):
            x = item[key]
            assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32, key
            assert x.min() >= -1.0 and x.max() <= 1.0, key
        # LQ is 8-bit quantised before scaling to [-1, 1].
        levels = (item["lq_large"] + 1) / 2 * 255
        assert torch.allclose(levels, levels.round(), atol=1e-3)
        assert not torch.equal(item["hq"], item["lq_large"])
    # Grey sources (LFW) come out with equal channels; 16-bit is scaled to the same range as 8-bit.
    hq8, hq16 = ds[2]["hq"], ds[5]["hq"]
    assert torch.equal(hq8[0], hq8[1])
    assert hq16.max() <= 1.0 and hq16.mean() > -0.9


def test_hq_only_without_degradations(faces: Path) -> None:
    item = FaceFolderDataset(faces, size=SIZE)[0]
    assert set(item) == {"hq", "flipped"}


def test_deterministic_per_seed_epoch_index(faces: Path) -> None:
    a, b = _dataset(faces, seed=3), _dataset(faces, seed=3)
    forward = [a[i] for i in range(len(a))]
    backward = [b[i] for i in reversed(range(len(b)))][::-1]
    for x, y in zip(forward, backward, strict=True):
        _assert_items_equal(x, y)
    _assert_items_equal(a[1], b[1])  # repeated access: same item

    other_seed = _dataset(faces, seed=4)[1]
    assert not torch.equal(other_seed["lq_large"], forward[1]["lq_large"])
    a.set_epoch(1)
    assert not torch.equal(a[1]["lq_large"], forward[1]["lq_large"])
    a.set_epoch(0)
    _assert_items_equal(a[1], forward[1])


def test_independent_of_worker_count(faces: Path) -> None:
    ds = _dataset(faces, degradations={"large": LARGE})
    ds.set_epoch(2)
    single = list(DataLoader(ds, batch_size=2, num_workers=0))
    multi = list(DataLoader(ds, batch_size=2, num_workers=2))
    for x, y in zip(single, multi, strict=True):
        for key in x:
            assert torch.equal(x[key], y[key]), key


def test_adding_a_degradation_leaves_the_others_unchanged(faces: Path) -> None:
    both = _dataset(faces)[0]
    large_only = _dataset(faces, degradations={"large": LARGE})[0]
    assert torch.equal(both["lq_large"], large_only["lq_large"])


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_flip_and_codes_consistent(faces: Path, tmp_path: Path, suffix: str) -> None:
    plain = _dataset(faces, flip=False)
    stems = [p.stem for p in plain.files]
    orig = {s: torch.arange(256).reshape(16, 16) + 1000 * i for i, s in enumerate(stems)}
    hflip = {s: -orig[s] for s in stems}
    codes_path = tmp_path / f"codes{suffix}"
    save_codes(codes_path, orig, hflip)
    loaded = load_codes(codes_path)
    assert all(torch.equal(loaded["hflip"][s], hflip[s]) for s in stems)

    ds = _dataset(faces, codes_path=codes_path, degradations={})
    seen = set()
    for epoch in range(8):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            seen.add(item["flipped"])
            expected = hflip if item["flipped"] else orig
            assert item["codes"].dtype == torch.int64 and item["codes"].shape == (256,)
            assert torch.equal(item["codes"], expected[stems[i]].reshape(-1))
            reference = plain[i]["hq"]
            assert torch.equal(item["hq"], reference.flip(-1) if item["flipped"] else reference)
    assert seen == {True, False}


def test_codes_missing_stem_is_an_error(faces: Path, tmp_path: Path) -> None:
    path = tmp_path / "codes.pt"
    save_codes(path, {"astronaut": torch.zeros(16, 16)}, {"astronaut": torch.zeros(16, 16)})
    with pytest.raises(ValueError, match="grace_hopper"):
        _dataset(faces, codes_path=path)


def test_corrupt_file_skipped_counted_and_named(faces: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = faces / "lfw" / "lfw1.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (faces / "zz_empty.jpg").write_bytes(b"")
    ds = _dataset(faces)
    good = _dataset(faces)
    with caplog.at_level(logging.WARNING, logger="codeformer.data.dataset"):
        items = [ds[i] for i in range(len(ds))]
    assert ds.bad_files == {bad, faces / "zz_empty.jpg"}
    messages = [r.getMessage() for r in caplog.records]
    assert any(str(bad) in m for m in messages)
    assert len(messages) == 2 and all("\n" not in m for m in messages)
    # The replacement is the next readable image, exactly as its own index returns it; wraps around.
    _assert_items_equal(items[3], good[4])
    _assert_items_equal(items[6], good[0])
    # Already-known bad files are skipped without a second warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="codeformer.data.dataset"):
        ds[3]
    assert not caplog.records


def test_all_files_unreadable_raises(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"junk")
    ds = FaceFolderDataset(tmp_path, size=SIZE)
    with pytest.raises(RuntimeError, match="no readable image"):
        ds[0]


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no faces here")
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        FaceFolderDataset(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FaceFolderDataset(tmp_path / "missing")


def test_index_out_of_range(faces: Path) -> None:
    ds = _dataset(faces)
    with pytest.raises(IndexError):
        ds[len(ds)]
