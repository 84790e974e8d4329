"""`codeformer download` against a local HTTP server."""

from __future__ import annotations

import hashlib
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from codeformer import weights
from codeformer.cli import main
from codeformer.weights import WeightFile

BODY = b"\x00cli download test\xff" * 100


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Serve tmp_path/www over HTTP and point the table (via CODEFORMER_MIRROR) at it."""
    www = tmp_path / "www" / "rel"
    www.mkdir(parents=True)
    (www / "a.pth").write_bytes(BODY)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(tmp_path / "www")))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("CODEFORMER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CODEFORMER_MIRROR", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.delenv("CODEFORMER_OFFLINE", raising=False)
    monkeypatch.setattr(weights, "WEIGHTS", (
        WeightFile("a.pth", "https://example.invalid/rel/a.pth", len(BODY), hashlib.sha256(BODY).hexdigest(),
                   "Test Licence", "test file"),
        WeightFile("missing.pth", "https://example.invalid/rel/missing.pth", None, None, "Test Licence", "x"),
    ))
    yield tmp_path / "home" / "weights"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def test_list_real_table(
        capsys: pytest.CaptureFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEFORMER_HOME", str(tmp_path))
    assert main(["download", "--list"]) == 0
    out = capsys.readouterr().out
    assert "codeformer.pth" in out and "376.6 MB" in out and "S-Lab License 1.0 (non-commercial)" in out
    assert "lpips_vgg_v0.1.pth" in out and "not cached" in out


def test_download_then_list_shows_cached(served: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["download", "--no-progress", "a.pth"]) == 0
    out = capsys.readouterr().out
    assert f"a.pth: {served / 'a.pth'}" in out
    assert (served / "a.pth").read_bytes() == BODY
    assert main(["download", "--list"]) == 0
    listing = capsys.readouterr().out
    assert str(served / "a.pth") in listing


def test_download_failure_exit_code(served: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["download", "--no-progress", "missing.pth"]) == 1
    err = capsys.readouterr().err
    assert "HTTP 404" in err and str(served / "missing.pth") in err


def test_download_needs_a_name(capsys: pytest.CaptureFixture) -> None:
    assert main(["download"]) == 2
    assert "--all or --list" in capsys.readouterr().err
