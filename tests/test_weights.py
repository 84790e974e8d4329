"""Tests for codeformer.weights against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from codeformer import weights
from codeformer.weights import WeightFile, WeightsError

GOOD = bytes(range(256)) * 40 + b"codeformer test weights"
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()
ORIGIN = "https://weights.example.invalid"


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.files`; `server.declared` can claim a longer Content-Length than the body."""

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        srv = self.server
        srv.requests.append(self.path)
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        declared = srv.declared.get(self.path, len(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if declared is not None:  # None: no Content-Length, the body ends when the connection closes
            self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)
        if declared != len(body):
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


class _Server:
    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.files = {}
        self.httpd.declared = {}
        self.httpd.requests = []
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self.running = True

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def files(self) -> dict[str, bytes]:
        return self.httpd.files

    @property
    def requests(self) -> list[str]:
        return self.httpd.requests

    def stop(self) -> None:
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)
            self.running = False


def _entry(name: str, size: int | None = None, sha256: str | None = None,
           prefix: str | None = None) -> WeightFile:
    return WeightFile(name, f"{ORIGIN}/rel/{name}", size, sha256, "Test Licence 1.0", "test weights",
                      sha256_prefix=prefix)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CODEFORMER_HOME", str(tmp_path / "home"))
    for var in ("CODEFORMER_OFFLINE", "CODEFORMER_MIRROR", "CODEFORMER_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(weights, "WEIGHTS", (
        _entry("known.pth", len(GOOD), GOOD_SHA),
        _entry("tofu.pth"),
        _entry("prefix.pth", prefix=GOOD_SHA[:8]),
        _entry("badprefix.pth", prefix="00000000" if not GOOD_SHA.startswith("00000000") else "11111111"),
    ))
    return tmp_path / "home" / "weights"


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, home: Path):
    srv = _Server()
    monkeypatch.setenv("CODEFORMER_MIRROR", srv.base)
    yield srv
    srv.stop()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_then_uses_cache_without_network(server: _Server, home: Path) -> None:
    server.files["/rel/known.pth"] = GOOD
    got = weights.resolve("known.pth", progress=False)
    assert got == home / "known.pth"
    assert got.read_bytes() == GOOD
    assert server.requests == ["/rel/known.pth"]
    assert _leftovers(home) == ["known.pth"]
    server.stop()
    again = weights.resolve("known.pth", progress=False)
    assert again == got
    assert len(server.requests) == 1


def test_progress_bar_goes_to_stderr(server: _Server, home: Path, capsys: pytest.CaptureFixture) -> None:
    server.files["/rel/known.pth"] = GOOD
    weights.resolve("known.pth", progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "known.pth" in captured.err


def test_url_override_wins_over_table_and_mirror(server: _Server, home: Path) -> None:
    server.files["/elsewhere/file.bin"] = GOOD
    got = weights.resolve("known.pth", url=server.base + "/elsewhere/file.bin", progress=False)
    assert got.read_bytes() == GOOD
    assert server.requests == ["/elsewhere/file.bin"]


def test_wrong_hash_leaves_nothing(server: _Server, home: Path) -> None:
    bad = bytes(reversed(GOOD))
    server.files["/rel/known.pth"] = bad
    with pytest.raises(WeightsError) as info:
        weights.resolve("known.pth", progress=False)
    msg = str(info.value)
    assert "known.pth" in msg and "sha256" in msg and str(home / "known.pth") in msg
    assert "\n" not in msg
    assert _leftovers(home) == []


def test_size_mismatch_leaves_nothing(server: _Server, home: Path) -> None:
    server.files["/rel/known.pth"] = GOOD + b"extra"
    with pytest.raises(WeightsError, match=rf"known\.pth: .* announces {len(GOOD) + 5} bytes, expected"):
        weights.resolve("known.pth", progress=False)
    assert _leftovers(home) == []
    server.httpd.declared["/rel/known.pth"] = None  # no Content-Length: caught after the transfer
    with pytest.raises(WeightsError, match=rf"known\.pth: .*size is {len(GOOD) + 5} bytes, expected"):
        weights.resolve("known.pth", progress=False)
    assert _leftovers(home) == []


def test_connection_dropped_mid_transfer_leaves_nothing(server: _Server, home: Path) -> None:
    server.files["/rel/tofu.pth"] = GOOD[:1000]
    server.httpd.declared["/rel/tofu.pth"] = len(GOOD)
    with pytest.raises(WeightsError, match=r"tofu\.pth: connection dropped after 1000 of"):
        weights.resolve("tofu.pth", progress=False)
    assert _leftovers(home) == []


def test_http_404_says_where_to_put_the_file(server: _Server, home: Path) -> None:
    with pytest.raises(WeightsError) as info:
        weights.resolve("known.pth", env_var="CODEFORMER_WEIGHTS", progress=False)
    msg = str(info.value)
    assert "HTTP 404" in msg
    assert f"put it at {home / 'known.pth'}" in msg
    assert "--weights" in msg and "CODEFORMER_WEIGHTS=" in msg
    assert server.base + "/rel/known.pth" in msg
    assert _leftovers(home) == []


def test_unreachable_server_is_a_weights_error(home: Path) -> None:
    srv = _Server()
    dead = srv.base
    srv.stop()
    with pytest.raises(WeightsError, match=r"known\.pth: download from .* failed"):
        weights.resolve("known.pth", url=dead + "/rel/known.pth", progress=False)
    assert _leftovers(home) == []


@pytest.mark.parametrize("how", ["env", "argument"])
def test_offline_missing_file_never_touches_network(
        server: _Server, home: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    server.files["/rel/known.pth"] = GOOD
    if how == "env":
        monkeypatch.setenv("CODEFORMER_OFFLINE", "1")
    with pytest.raises(WeightsError) as info:
        weights.resolve("known.pth", offline=True if how == "argument" else None, progress=False)
    assert str(home / "known.pth") in str(info.value)
    assert "offline" in str(info.value)
    assert server.requests == []


def test_offline_with_cached_file_works(server: _Server, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/rel/known.pth"] = GOOD
    weights.resolve("known.pth", progress=False)
    server.stop()
    monkeypatch.setenv("CODEFORMER_OFFLINE", "1")
    assert weights.resolve("known.pth", progress=False).read_bytes() == GOOD
    assert weights.resolve("known.pth", offline=True, progress=False) == home / "known.pth"


def test_trust_on_first_use_records_and_detects_tampering(server: _Server, home: Path) -> None:
    server.files["/rel/tofu.pth"] = GOOD
    got = weights.resolve("tofu.pth", progress=False)
    stamp = home / "tofu.pth.sha256"
    assert stamp.read_text().split()[0] == GOOD_SHA
    assert _leftovers(home) == ["tofu.pth", "tofu.pth.sha256"]
    server.stop()
    assert weights.resolve("tofu.pth", progress=False) == got
    got.write_bytes(GOOD[:-1] + b"X")
    with pytest.raises(WeightsError, match=r"tofu\.pth: cached copy .* recorded"):
        weights.resolve("tofu.pth", progress=False)


def test_hand_placed_file_is_trusted_then_recorded(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "tofu.pth").write_bytes(GOOD)
    assert weights.resolve("tofu.pth", offline=True) == home / "tofu.pth"
    assert (home / "tofu.pth.sha256").read_text().split()[0] == GOOD_SHA


def test_tampered_cached_file_with_known_hash_is_detected(server: _Server, home: Path) -> None:
    server.files["/rel/known.pth"] = GOOD
    got = weights.resolve("known.pth", progress=False)
    got.write_bytes(bytes(reversed(GOOD)))
    with pytest.raises(WeightsError, match=r"known\.pth: cached copy .*failed verification"):
        weights.resolve("known.pth", progress=False)


def test_sha256_prefix_check(server: _Server, home: Path) -> None:
    server.files["/rel/prefix.pth"] = GOOD
    server.files["/rel/badprefix.pth"] = GOOD
    assert weights.resolve("prefix.pth", progress=False).read_bytes() == GOOD
    with pytest.raises(WeightsError, match="expected one starting with"):
        weights.resolve("badprefix.pth", progress=False)
    assert not (home / "badprefix.pth").exists()


def test_explicit_path_wins_and_must_exist(
        server: _Server, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "my.pth"
    mine.write_bytes(b"anything")
    assert weights.resolve("known.pth", path=mine) == mine
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match=f"{missing}.* does not exist"):
        weights.resolve("known.pth", path=missing)
    monkeypatch.setenv("CODEFORMER_WEIGHTS", str(mine))
    assert weights.resolve("known.pth", env_var="CODEFORMER_WEIGHTS") == mine
    monkeypatch.setenv("CODEFORMER_WEIGHTS", str(missing))
    with pytest.raises(WeightsError, match=r"CODEFORMER_WEIGHTS=.*does not exist"):
        weights.resolve("known.pth", env_var="CODEFORMER_WEIGHTS")
    assert server.requests == []


def test_home_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("CODEFORMER_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert weights.weights_dir() == tmp_path / "user" / ".cache" / "codeformer" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.home_dir() == tmp_path / "xdg" / "codeformer"
    monkeypatch.setenv("CODEFORMER_HOME", str(tmp_path / "cf"))
    assert weights.home_dir() == tmp_path / "cf"


def test_unknown_name() -> None:
    with pytest.raises(WeightsError, match="unknown weight file 'nope.pth'.*codeformer.pth"):
        weights.resolve("nope.pth")


def test_real_table_facts() -> None:
    names = [w.name for w in weights.WEIGHTS]
    assert len(names) == len(set(names))
    for expected in ("codeformer.pth", "codeformer_colorization.pth", "codeformer_inpainting.pth",
                     "vqgan_code1024.pth", "vqgan_discriminator.pth", "codeformer_stage2.pth",
                     "latent_gt_code1024.pth", "detection_Resnet50_Final.pth", "parsing_parsenet.pth",
                     "vgg16-397923af.pth", "lpips_vgg_v0.1.pth"):
        assert expected in names
    cf = weights.get("codeformer.pth")
    assert cf.url == "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth"
    assert cf.size == 376_637_898
    assert cf.sha256 == "1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7"
    assert weights.get("vqgan_code1024.pth").sha256 == (
        "4d1c6741b3cffcbdc2cd1a12b2c3c2442282e042d5de66909cb643d4fa31b20f")
    assert weights.get("vgg16-397923af.pth").sha256_prefix == "397923af"
    for w in weights.WEIGHTS:
        assert w.url.startswith("https://")
        assert w.sha256 is None or len(w.sha256) == 64
    notice = weights.describe("codeformer.pth")
    assert "S-Lab License 1.0 (non-commercial)" in notice and "\n" not in notice


def test_a_killed_downloads_part_file_is_removed_by_the_next_download(server: _Server, home: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    from codeformer.atomic import temp_path

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              check=True).stdout)
    home.mkdir(parents=True)
    mine = temp_path(home / "known.pth", suffix=".part")
    stale = mine.with_name(mine.name.replace(f".tmp-{os.getpid()}-", f".tmp-{dead}-"))
    stale.write_bytes(GOOD[:10])  # what SIGKILL mid-download leaves
    os.utime(stale, (time.time() - 60, time.time() - 60))
    server.files["/rel/known.pth"] = GOOD
    weights.resolve("known.pth", progress=False)
    assert _leftovers(home) == ["known.pth"]
