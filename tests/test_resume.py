"""The run manifest and `codeformer restore DIR -o OUT --resume`: a killed folder run, run again, redoes nothing
that was done, loses nothing, and gives the outputs of an uninterrupted run; changed inputs or options are redone.
Also: the archive listing (folders, list files, file:// URIs) and `--engine ray` without Ray installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from codeformer.cli import main
from codeformer.cluster.sources import expand_sources
from codeformer.manifest import MANIFEST_NAME, Job, Manifest, fingerprint, photo_record, plan
from tests.cluster_helpers import make_archive

ROOT = Path(__file__).resolve().parents[1]


def _photo_lines(outdir: Path) -> list[dict]:
    lines = []
    for raw in (outdir / MANIFEST_NAME).read_bytes().splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if line.get("kind") == "photo":
            lines.append(line)
    return lines


def _outputs(outdir: Path, drop: tuple[str, ...] = ("output",)) -> dict[str, bytes]:
    """Restored photos and sidecars (sidecars without the fields `drop`: their own path), by path under `outdir`."""
    found = {}
    for p in sorted(outdir.rglob("*")):
        if not p.is_file() or p.name == MANIFEST_NAME or p.name.startswith("."):
            continue
        data = p.read_bytes()
        if p.suffix == ".json":
            record = json.loads(data)
            for key in drop:
                record.pop(key)
            data = json.dumps(record, sort_keys=True).encode()
        found[p.relative_to(outdir).as_posix()] = data
    return found


def _stamps(outdir: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime_ns) of every restored photo: a rewrite (temp file + rename) changes the inode."""
    return {p.relative_to(outdir).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in outdir.rglob("*") if p.is_file() and p.suffix != ".json" and p.name != MANIFEST_NAME}


def _restore(src: Path, out: Path, weights: Path, *extra: str, die_after: int = 0,
             marker: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", DIE_AFTER=str(die_after), DIE_MARKER=str(marker or ""))
    cmd = [sys.executable, "-m", "tests.cluster_helpers", "local", str(src), "-o", str(out), "--recursive",
           "--no-progress", "--weights", str(weights), *extra]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_manifest_skips_a_torn_line_and_appends_after_it(tmp_path):
    m = Manifest(tmp_path)
    m.append([photo_record("a.png", "a.png", "11", "fp", 1)])
    with open(m.path, "ab") as f:
        f.write(b'{"kind": "photo", "input": "b.png", "out')  # a run killed in the middle of a line
    m.append([photo_record("c.png", "c.png", "33", "fp", 2, error="c.png: not an image")])
    latest = m.read()
    assert sorted(latest) == ["a.png", "c.png"]
    assert latest["c.png"]["status"] == "failed" and latest["c.png"]["error"] == "c.png: not an image"
    assert m.path.read_bytes().count(b"\n") == 3  # the torn line was closed, not glued to the next


def test_plan_needs_same_bytes_same_options_and_the_output(tmp_path):
    src, out = tmp_path / "a.png", tmp_path / "out"
    src.write_bytes(b"one")
    out.mkdir()
    job = Job(str(src), Path("a.png"), out / "a.png")
    fp = fingerprint({"w": 0.5})
    from codeformer.manifest import file_sha256

    previous = {"a.png": photo_record(str(src), "a.png", file_sha256(src), fp, 1)}
    assert plan([job], fp, out, previous)[0] == [job]  # no output file yet
    (out / "a.png").write_bytes(b"restored")
    assert plan([job], fp, out, previous)[1] == [job]
    assert plan([job], fingerprint({"w": 0.7}), out, previous)[0] == [job]  # other options
    src.write_bytes(b"two")
    assert plan([job], fp, out, previous)[0] == [job]  # other input bytes


def test_killed_folder_run_resumes_without_redoing_or_losing(tmp_path):
    src = tmp_path / "src"
    make_archive(src, 6)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    weights = tmp_path / "codeformer.pth"
    weights.write_bytes(b"stand-in weights")
    full = _restore(src, tmp_path / "full", weights, "--resume")
    assert full.returncode == 1 and "6 image(s) restored, 6 face(s), 1 failure(s)" in full.stderr

    out, marker = tmp_path / "out", tmp_path / "died"
    killed = _restore(src, out, weights, "--resume", die_after=3, marker=marker)
    assert killed.returncode == -signal.SIGKILL and marker.exists()
    before = _stamps(out)
    assert 0 < len(before) < 6  # killed mid-way: some photos written, not all
    resumed = _restore(src, out, weights, "--resume")
    assert f"{6 - len(before)} image(s) restored" in resumed.stderr
    assert f"{len(before)} already done (skipped)" in resumed.stderr
    after = _stamps(out)
    assert {k: after[k] for k in before} == before  # nothing done was redone
    assert _outputs(out) == _outputs(tmp_path / "full")  # nothing lost, the same bytes
    ok = [line["output"] for line in _photo_lines(out) if line["status"] == "ok"]
    assert sorted(ok) == sorted(set(ok)) and len(ok) == 6  # each photo recorded once

    again = _restore(src, out, weights, "--resume")
    assert "0 image(s) restored" in again.stderr and "6 already done (skipped)" in again.stderr
    assert _stamps(out) == after


def test_resume_redoes_changed_inputs_and_options(tmp_path, monkeypatch, capsys):
    import codeformer.backends
    import codeformer.face.detection
    from tests.cluster_helpers import FaceConv, TemplateDetector

    monkeypatch.setattr(codeformer.backends, "load_face_model", lambda *a, **k: (FaceConv(), {}))
    monkeypatch.setattr(codeformer.face.detection, "make_detector", lambda name="hybrid": TemplateDetector())
    src, out, weights = tmp_path / "src", tmp_path / "out", tmp_path / "w.pth"
    paths = make_archive(src, 4)
    weights.write_bytes(b"stand-in weights")
    args = ["restore", str(src), "-o", str(out), "--recursive", "--no-progress", "--resume", "--weights",
            str(weights)]
    assert main(args) == 0
    first = _stamps(out)
    paths[1].write_bytes(paths[3].read_bytes())  # another photo's bytes under the same name
    (out / "photo00.png").unlink()  # an output the user deleted
    assert main(args) == 0
    assert "2 image(s) restored" in capsys.readouterr().err
    second = _stamps(out)
    assert second["sub/photo02.png"] == first["sub/photo02.png"]
    assert second["photo01.jpg"] != first["photo01.jpg"]
    assert main([*args, "-w", "0.7"]) == 0  # another option: everything again
    assert "4 image(s) restored" in capsys.readouterr().err
    weights.write_bytes(b"other weights")  # other weights: everything again
    assert main(args) == 0
    assert "4 image(s) restored" in capsys.readouterr().err


def test_resume_refuses_review_outputs(tmp_path, capsys):
    assert main(["restore", str(tmp_path), "-o", str(tmp_path / "o"), "--resume", "--report", "json"]) == 2
    assert "--report: not available with --resume" in capsys.readouterr().err


def test_engine_ray_without_ray_names_the_extra(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    assert main(["restore", str(tmp_path), "-o", str(tmp_path / "o"), "--engine", "ray"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["codeformer restore: --engine ray needs Ray: pip install 'codeformer[cluster]'"]


def test_engine_ray_refusals_come_before_ray_starts(tmp_path, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    assert main(["restore", str(tmp_path), "-o", str(tmp_path / "o"), "--engine", "ray", "--weights", str(bad)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {bad}: not a readable PyTorch checkpoint (corrupt or another format)"]
    clip = tmp_path / "clip.mp4"
    assert main(["restore", str(clip), "-o", str(tmp_path / "o"), "--engine", "ray"]) == 2
    assert "--engine ray restores photos" in capsys.readouterr().err
    assert main(["restore", str(tmp_path), "-o", str(tmp_path / "o"), "--address", "auto"]) == 2
    assert "--address needs --engine ray" in capsys.readouterr().err
    assert main(["restore", str(tmp_path), "-o", str(tmp_path / "o"), "--engine", "ray", "--device", "cuda"]) == 2
    assert "--device cuda with --engine ray needs --gpus-per-worker" in capsys.readouterr().err


def test_archive_listing_folders_list_files_and_uris(tmp_path):
    src = tmp_path / "src"
    make_archive(src, 4)
    (src / "notes.md").write_text("not listed")
    listing = tmp_path / "list.txt"
    listing.write_text("# scans\nsrc/photo00.png\n\n" + f"{(src / 'photo01.jpg').as_uri()}\nmissing.png\n")
    found, failures = expand_sources([listing.as_posix(), src.as_uri(), str(src)], True, tmp_path / "out")
    rels = [(source.replace(str(tmp_path), "T"), rel.as_posix()) for source, rel in found]
    assert rels[:3] == [("T/src/photo00.png", "src/photo00.png"), ("file://T/src/photo01.jpg", "photo01.jpg"),
                        ("T/missing.png", "missing.png")]
    assert rels[3:7] == [("file://T/src/photo00.png", "photo00.png"), ("file://T/src/photo01.jpg", "photo01.jpg"),
                        ("file://T/src/photo03.jpg", "photo03.jpg"), ("file://T/src/sub/photo02.png",
                                                                       "sub/photo02.png")]
    assert [rel for _, rel in rels[7:]] == ["photo00.png", "photo01.jpg", "photo03.jpg", "sub/photo02.png"]
    assert not failures
    nowhere = [(tmp_path / "nowhere").as_uri(), str(tmp_path / "nowhere.txt")]
    found, failures = expand_sources(nowhere, True, tmp_path / "out")
    assert found == [] and [reason for _, reason in failures] == [f"{name}: no such file or folder" for name in nowhere]


def test_ray_prepare_stage_never_overwrites_an_input(tmp_path):
    """The Ray prepare stage, called as a plain object: an output that is its input is a failed row, unread."""
    from codeformer.cluster.engine import _Prepare
    from codeformer.face.pipeline import RestoreOptions
    from tests.cluster_helpers import make_detector

    src = make_archive(tmp_path, 1)[0]
    before = src.read_bytes()
    row = {"index": 0, "source": str(src), "rel": src.name, "output": str(src), "key": src.name, "previous": ""}
    out = _Prepare(RestoreOptions(), "fp", make_detector)(row)
    assert out["state"] == "failed" and out["work"] is None
    assert json.loads(out["line"])["error"] == f"{src}: the output would overwrite the input; choose another -o folder"
    assert src.read_bytes() == before
