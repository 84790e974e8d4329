"""`--engine ray`: the Ray Data pipeline on one local Ray (2 CPUs, shared by the module) with a small stand-in
model and detector (tests/cluster_helpers.py). Outputs byte-identical to the local run; an actor killed mid-run is
retried and each photo written and recorded once; a killed driver, run again, redoes nothing done and loses
nothing; a corrupt file is a failed manifest row with the local run's message; changed options and inputs are
redone, unchanged ones skipped.

Measured on the 2-core machine with 7 other jobs running: about 2 minutes, nearly all of it process start-up."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import codeformer.backends
import codeformer.cluster
from codeformer.cli import main
from codeformer.cluster import ClusterOptions, restore_archive
from codeformer.data.images import read_image
from codeformer.face.batch import OutputOptions, run_batch, run_options
from codeformer.face.pipeline import RestoreOptions, Restorer
from tests.cluster_helpers import FaceConvSource, TemplateDetector, make_archive, make_detector
from tests.test_resume import _outputs, _photo_lines, _stamps

ROOT = Path(__file__).resolve().parents[1]
SMALL = ClusterOptions(workers=1, prepare_workers=1)


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray for the module: 2 CPUs, a 200 MB object store; stopped at the end."""
    import ray

    ray.init(num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def _local(src: Path, out: Path, w: float = 0.5) -> None:
    """The single-process run of the same archive (the reference)."""
    opts, output = RestoreOptions(w=w), OutputOptions(out, recursive=True)
    run_batch(Restorer(FaceConvSource().load(), TemplateDetector()), [str(src)], opts, output, progress=False,
              resume=run_options(opts, output, FaceConvSource().identity()))


@pytest.fixture(scope="module")
def first_run(ray_address, tmp_path_factory):
    """An archive with a corrupt file, restored with Ray by a model that SIGKILLs its actor at the 3rd face."""
    tmp = tmp_path_factory.mktemp("archive")
    src, out, marker = tmp / "src", tmp / "ray", tmp / "actor-died"
    make_archive(src, 6)
    (src / "sub" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    report = restore_archive([str(src)], FaceConvSource(die_after=3, marker=str(marker)),
                             OutputOptions(out, recursive=True), cluster=SMALL, detector=make_detector,
                             progress=False)
    return tmp, src, out, marker, report


def test_outputs_match_the_local_run_after_an_actor_is_killed(first_run):
    tmp, src, out, marker, report = first_run
    assert marker.exists()  # the model actor really died mid-run
    assert (report.images, report.faces, report.skipped) == (6, 6, 0)
    _local(src, tmp / "local")
    assert _outputs(out) == _outputs(tmp / "local")  # every photo and sidecar, byte for byte
    lines = _photo_lines(out)
    assert sorted(line["output"] for line in lines) == sorted({line["output"] for line in lines})  # once each
    failed = [line for line in lines if line["status"] == "failed"]
    local_failed = [line for line in _photo_lines(tmp / "local") if line["status"] == "failed"]
    assert [f["error"] for f in failed] == [f["error"] for f in local_failed] == [report.failures[0][1]]
    assert failed[0]["error"].startswith(str(src / "sub" / "corrupt.png") + ": ")
    assert not (out / "sub" / "corrupt.png").exists()


def test_cli_rerun_with_another_option_redoes_every_output(first_run, ray_address, monkeypatch, capsys):
    """Through `codeformer restore --engine ray` (model and detector swapped for the stand-ins). Skipping what is
    done (same bytes, same options) and redoing changed inputs is the rule of `manifest.done_record`, tested
    with the local run in test_resume.py and here by the killed-driver rerun."""
    tmp, src, out, _, _ = first_run
    monkeypatch.setattr(codeformer.backends, "ModelSpec", lambda *a, **k: FaceConvSource())
    monkeypatch.setattr(codeformer.cluster, "restore_archive",
                        functools.partial(restore_archive, detector=make_detector))
    args = ["restore", str(src), "-o", str(out), "--engine", "ray", "--address", ray_address, "--recursive",
            "--no-progress"]
    before = _stamps(out)
    assert main([*args, "--workers", "2"]) == 1  # 2 CPUs cannot hold 2 model actors and the CPU stages
    assert "error: the Ray cluster has 2 CPU(s); 2 worker(s) × 1 CPU, plus 0.5 to decode and 0.5 to write, need 3: " \
        "lower --workers or --cpus-per-worker" in capsys.readouterr().err
    assert _stamps(out) == before
    assert main([*args, "-w", "0.7"]) == 1  # the corrupt file still fails
    assert "6 image(s) restored, 6 face(s), 1 failure(s), " in capsys.readouterr().err
    at_07 = _stamps(out)
    assert all(at_07[k] != before[k] for k in before)  # another w: every photo redone
    _local(src, tmp / "local07", w=0.7)
    assert _outputs(out) == _outputs(tmp / "local07")


def test_killed_driver_then_rerun_loses_nothing_and_redoes_nothing(ray_address, tmp_path):
    """The archive is given as a file:// URI here: read through pyarrow's filesystem, named as the folder."""
    src, out = tmp_path / "src", tmp_path / "out"
    make_archive(src, 8)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    driver = subprocess.Popen([sys.executable, "-m", "tests.cluster_helpers", "ray", ray_address, src.as_uri(),
                               str(out)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            if out.is_dir() and any(out.rglob("*.json")):  # a first photo finished (its sidecar comes last)
                break
            time.sleep(0.1)
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert driver.returncode == -signal.SIGKILL
    time.sleep(2)  # Ray ends the dead driver's tasks
    done = {p.relative_to(out).as_posix()[:-5] for p in out.rglob("*.json")}  # sidecars are written last
    before = {k: v for k, v in _stamps(out).items() if k in done}
    assert 0 < len(before) < 8  # killed mid-run
    for name in _stamps(out):
        read_image(out / name)  # whatever is there is whole

    report = restore_archive([src.as_uri()], FaceConvSource(), OutputOptions(out, recursive=True), cluster=SMALL,
                             detector=make_detector, progress=False)
    assert report.skipped >= len(before) and report.images + report.skipped == 8 and not report.failures
    after = _stamps(out)
    assert {k: after[k] for k in before} == before  # nothing done was redone
    _local(src, tmp_path / "local")
    assert _outputs(out, drop=("output", "input")) == _outputs(tmp_path / "local", drop=("output", "input"))
    assert json.loads((out / "sub" / "photo02.png.json").read_text())["input"] == f"{src.as_uri()}/sub/photo02.png"
    ok = [line["output"] for line in _photo_lines(out) if line["status"] == "ok"]
    assert sorted(ok) == sorted(set(ok)) and len(ok) == 8  # each photo recorded once
