"""Photos as a hostile user gives them: outputs onto inputs, FIFOs, symlink loops, stale temporaries, odd names,
bad -o, and a stdout that closes early or is full (issue 13, items 1-4 and 6-8)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from codeformer.data.images import Picture, encode_image, read_image
from codeformer.face.batch import OutputOptions, run_batch
from codeformer.face.pipeline import RestoreOptions, Restorer
from tests.face_helpers import IdentityRestorer

SRC = str(Path(__file__).resolve().parents[1] / "src")


class NoFaces:
    def detect(self, rgb: np.ndarray, min_face: float = 0.0) -> list:
        return []


def photo(path: Path, seed: int = 0) -> bytes:
    data = encode_image(Picture(np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)), "PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def batch(inputs: list[Path], out: Path, **kw) -> object:
    return run_batch(Restorer(IdentityRestorer(), NoFaces()), [str(p) for p in inputs], RestoreOptions(),
                     OutputOptions(out, **kw), progress=False)


@pytest.fixture()
def stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """CLI arguments that load an identity restorer and a detector that finds nothing."""
    monkeypatch.setattr("codeformer.checkpoint.load_codeformer", lambda path, device="cpu": IdentityRestorer())
    monkeypatch.setattr("codeformer.runtime.TorchRunner", lambda model, *a, **k: model)
    monkeypatch.setattr("codeformer.face.detection.make_detector", lambda name="hybrid": NoFaces())
    weights = tmp_path / "stand-in.pth"
    weights.write_bytes(b"stand-in")
    return ["--weights", str(weights), "--no-progress"]


# ------------------------------------------------------------------------------------- 1: outputs onto inputs
def test_output_that_is_an_input_is_refused_before_any_work(tmp_path: Path, stand_in: list[str], capsys) -> None:
    from codeformer.cli import main

    folder = tmp_path / "photos"
    original = photo(folder / "a.png")
    linked = tmp_path / "linked"
    linked.mkdir()
    os.link(folder / "a.png", linked / "a.png")  # a hard link: another name for the same file
    (tmp_path / "sym").mkdir()
    (tmp_path / "sym" / "a.png").symlink_to(folder / "a.png")
    cases = [[str(folder), "-o", str(folder)], [str(folder / "a.png"), "-o", str(folder)],
             [str(folder), "-o", str(linked)], [str(folder), "-o", str(tmp_path / "sym")],
             [str(folder), "-o", str(folder), "--report", "json"]]
    for args in cases:
        assert main(["restore", *args, *stand_in]) == 2, args
        err = [line for line in capsys.readouterr().err.splitlines() if "overwrite the input" in line]
        assert len(err) == 1 and "a.png" in err[0]
        assert (folder / "a.png").read_bytes() == original
        assert sorted(p.name for p in folder.iterdir()) == ["a.png"]  # not even a sidecar was written
    from codeformer.face.batch import OutputIsInputError

    photo(tmp_path / "x" / "compare" / "b.png", seed=1)
    with pytest.raises(OutputIsInputError):  # its compare/ image would be the input itself
        batch([tmp_path / "x" / "compare" / "b.png"], tmp_path / "x", compare=True)
    photo(tmp_path / "y" / "c.png")
    photo(tmp_path / "z" / "faces" / "c_00_cropped.png", seed=2)  # where c.png's first face crop would go
    with pytest.raises(OutputIsInputError, match="c_00_cropped.png"):
        batch([tmp_path / "y" / "c.png", tmp_path / "z" / "faces" / "c_00_cropped.png"], tmp_path / "z",
              save_faces=True)


# ------------------------------------------------------------------------------ 2: FIFO; 3: symlink loop
def test_a_fifo_named_like_a_photo_is_skipped_not_waited_on(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    photo(folder / "good.png")
    os.mkfifo(folder / "x.png")
    done: list = []
    worker = threading.Thread(target=lambda: done.append(batch([folder], tmp_path / "out")), daemon=True)
    worker.start()
    worker.join(timeout=60)  # a bound for a hang, not a speed check: the run itself takes milliseconds
    if worker.is_alive():  # release the blocked open() so the thread ends
        with open(folder / "x.png", "wb"):
            pass
        worker.join()
    assert done, "the run hung on the FIFO"
    (report,) = done
    assert report.images == 1 and len(report.failures) == 1
    assert "x.png" in report.failures[0][1] and "not a regular file (FIFO)" in report.failures[0][1]
    with pytest.raises(Exception, match="not a regular file"):
        read_image(folder / "x.png")  # the reader checks before opening, too


def test_recursive_run_walks_each_real_folder_once(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    photo(folder / "sub" / "a.png")
    (folder / "sub" / "loop").symlink_to(folder)  # in/sub/loop → in: a cycle
    report = batch([folder], tmp_path / "out", recursive=True)
    assert report.images == 1 and not report.failures
    written = [p for p in (tmp_path / "out").rglob("*.png")]
    assert len(written) == 1


# --------------------------------------------------------------------------------- 4: stale temporaries
KILLED_WRITER = """
import os, signal, sys
from codeformer.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half a photo")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_runs_temporaries_are_removed_by_the_next_run(tmp_path: Path) -> None:
    from codeformer.atomic import remove_stale_temporaries, temp_path

    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": SRC}
    child = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(out / "sub" / "a.png")], env=env, timeout=120)
    assert child.returncode == -signal.SIGKILL
    (stale,) = (out / "sub").iterdir()
    assert stale.name.startswith(".a.png.tmp-")
    mine = temp_path(out / "b.png")  # a live writer's (this process) file is kept
    mine.write_bytes(b"being written")
    unrelated = out / ".a.png.tmp-notours"
    unrelated.write_bytes(b"someone else's")
    photo(tmp_path / "in" / "sub" / "a.png")
    untouched = tmp_path / "out" / "elsewhere" / stale.name  # a folder this run does not write to is not walked
    untouched.parent.mkdir()
    untouched.write_bytes(b"x")
    os.utime(untouched, (time.time() - 60, time.time() - 60))
    time.sleep(0.01)  # the next run starts after the kill (mtime resolution)
    report = batch([tmp_path / "in"], out, recursive=True)
    assert report.images == 1
    assert not stale.exists() and mine.exists() and unrelated.exists() and untouched.exists()
    # a file of a dead writer that is newer than the run is left too (it may be another host's)
    newer = out / stale.name
    newer.write_bytes(b"x")
    assert remove_stale_temporaries(out, before=time.time() - 3600) == []
    assert remove_stale_temporaries(out, before=time.time() + 1) == [newer]


# ------------------------------------------------------------------------------------------ 6: bad -o
def test_unusable_output_folder_is_one_line(tmp_path: Path, stand_in: list[str], capsys) -> None:
    from codeformer.cli import main

    src = tmp_path / "a.png"
    photo(src)
    (tmp_path / "file").write_bytes(b"x")
    for out in (tmp_path / "file", tmp_path / "file" / "below", Path("/proc/no/such/place")):
        assert main(["restore", str(src), "-o", str(out), *stand_in]) == 2
        err = capsys.readouterr().err
        notices = ("licence:", "device:")  # the weights' and the device's notices, then this
        (line,) = [line for line in err.splitlines() if not any(n in line for n in notices)]
        assert str(out) in line and "output folder" in line and "Traceback" not in err


# ----------------------------------------------------------------------------------------- 7: file names
def test_latin1_and_long_non_ascii_names(tmp_path: Path, stand_in: list[str], capsys) -> None:
    from codeformer.cli import main

    folder = tmp_path / "in"
    folder.mkdir()
    latin1 = os.fsdecode("caf\xe9.png".encode("latin-1"))  # not UTF-8: surrogate-escaped in Python
    photo(folder / latin1)
    long_name = "é" * 120 + ".png"  # 240 bytes of UTF-8: fits a file name, but not with a temp suffix added
    photo(folder / long_name, seed=2)
    out = tmp_path / "out"
    assert main(["restore", str(folder), "-o", str(out), *stand_in]) == 0, capsys.readouterr().err
    assert (out / latin1).is_file() and (out / (latin1 + ".json")).is_file()
    assert (out / long_name).is_file()
    assert "2 image(s) restored" in capsys.readouterr().err
    # the sidecar of the long name does not fit (255 bytes): the failure says so and the photo is not left
    long_name = "é" * 125 + ".png"  # 254 bytes: OUT.json does not fit
    photo(tmp_path / "in2" / long_name)
    assert main(["restore", str(tmp_path / "in2"), "-o", str(tmp_path / "out2"), *stand_in]) == 1
    err = capsys.readouterr().err
    assert "1 failure(s)" in err and "name too long" in err.lower()
    assert not (tmp_path / "out2" / long_name).exists()


# -------------------------------------------------------------------------------------------- 8: stdout
STDOUT_CHILD = """
import sys
import codeformer.checkpoint, codeformer.runtime, codeformer.face.detection
from tests.face_helpers import IdentityRestorer
class NoFaces:
    def detect(self, rgb, min_face=0.0):
        return []
codeformer.checkpoint.load_codeformer = lambda path, device="cpu": IdentityRestorer()
codeformer.runtime.TorchRunner = lambda model, *a, **k: model
codeformer.face.detection.make_detector = lambda name="hybrid": NoFaces()
from codeformer.cli import main
sys.exit(main(["restore", "-", "--weights", sys.argv[1], "--no-progress"]))
"""


def _stdout_child(tmp_path: Path, stdout: object) -> subprocess.Popen:
    weights = tmp_path / "stand-in.pth"
    weights.write_bytes(b"stand-in")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, str(Path(SRC).parent)])}
    return subprocess.Popen([sys.executable, "-c", STDOUT_CHILD, str(weights)], stdin=subprocess.PIPE,
                            stdout=stdout, stderr=subprocess.PIPE, env=env)


def test_stdout_that_closes_early_or_is_full_fails_in_one_line(tmp_path: Path) -> None:
    big = encode_image(Picture(np.random.default_rng(3).integers(0, 255, (600, 600, 3), dtype=np.uint8)), "PNG")
    child = _stdout_child(tmp_path, subprocess.PIPE)
    child.stdin.write(big)
    child.stdin.close()
    child.stdout.read(10)  # like `| head -c 10`
    child.stdout.close()
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) != 0
    assert "Traceback" not in err and "<stdout>" in err and "closed the pipe" in err, err
    with open("/dev/full", "wb") as full:
        child = _stdout_child(tmp_path, full)
        _, err_bytes = child.communicate(big, timeout=120)
    err = err_bytes.decode()
    assert child.returncode != 0 and "Traceback" not in err and "No space left" in err, err


def test_cli_stdout_write_error_is_reported(monkeypatch: pytest.MonkeyPatch, stand_in: list[str], capsys) -> None:
    from codeformer.cli import main

    class Full(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(photo_bytes())))
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BufferedWriter(Full())))
    assert main(["restore", "-", *stand_in]) == 1
    err = capsys.readouterr().err
    assert "<stdout>" in err and "No space left on device" in err


def photo_bytes() -> bytes:
    return encode_image(Picture(np.zeros((32, 32, 3), np.uint8)), "PNG")


def test_atomic_path_cleans_up(tmp_path: Path) -> None:
    from codeformer.atomic import atomic_path

    with pytest.raises(RuntimeError), atomic_path(tmp_path / "x.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_closed_stdin_or_stdout_is_one_line(monkeypatch: pytest.MonkeyPatch, stand_in: list[str], capsys) -> None:
    from codeformer.cli import main

    monkeypatch.setattr(sys, "stdout", None)  # what Python gives a process started with >&-
    assert main(["restore", "-", *stand_in]) == 2
    assert "needs an open stdout" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", None)
    assert main(["restore", "-", *stand_in]) == 2
    assert "needs an open stdin" in capsys.readouterr().err
