"""The CLI end to end with a real (small) network, nothing stubbed but its size: `codeformer restore` on a video
with real faces (dlib detector, TorchRunner, restore_video), and `codeformer serve` on the torch runtime in a
subprocess (issue 13, item 18).

The checkpoint is a real file read by the real loader (weights-only, strict keys); only the architecture's size
constants are those of a small network that still takes 512 px faces, so a face costs about a second on a CPU
instead of the released network's several."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import codeformer.checkpoint
from codeformer.models.codeformer import CodeFormer
from tests.face_helpers import ASTRONAUT
from tests.video_helpers import decoded, pan_frames, write_clip

ROOT = Path(__file__).resolve().parents[1]
# A small CodeFormer for 512 px faces: six levels (512 → 16), 32 channels, one block per level.
SMALL_512 = dict(dim_embd=32, n_head=4, n_layers=1, latent_size=256, img_size=512, nf=32, ch_mult=(1, 1, 1, 1, 1, 1),
                 res_blocks=1, attn_resolutions=(16,), emb_dim=32)


def small_checkpoint(path: Path) -> Path:
    """Seeded random weights of the SMALL_512 network, saved in the official `params_ema` layout."""
    torch.manual_seed(0)
    model = CodeFormer(codebook_size=16, connect_list=(32, 64, 128, 256), **SMALL_512)
    torch.save({"params_ema": model.state_dict()}, path)
    return path


def test_cli_restores_a_video_with_a_real_network_and_real_faces(tmp_path: Path, monkeypatch, capsys) -> None:
    from codeformer.cli import main

    monkeypatch.setattr(codeformer.checkpoint, "CodeFormer", functools.partial(CodeFormer, **SMALL_512))
    weights = small_checkpoint(tmp_path / "small.pth")
    frames = pan_frames(2, h=200, w=240, side=160)
    src, out = tmp_path / "clip.mp4", tmp_path / "out.mp4"
    write_clip(src, frames, audio=True)
    code = main(["restore", str(src), "-o", str(out), "--weights", str(weights), "--no-progress", "-w", "0.5",
                 "--min-face", "40"])  # its box is ~47 px
    err = capsys.readouterr().err
    assert code == 0, err
    report = json.loads((tmp_path / "out.mp4.json").read_text())
    assert report["frames"] == 2 and report["faces"] == 2 and len(report["tracks"]) == 1  # dlib found the face
    before, after = decoded(src), decoded(out)
    assert len(after) == 2
    x = 4 + 2 * 1  # frame 1: the face patch's left edge (pan_frames moves it 2 px a frame)
    face_change = np.abs(after[1][40:160, x + 30:x + 130].astype(int) - before[1][40:160, x + 30:x + 130]).mean()
    corner_change = np.abs(after[1][:30, -30:].astype(int) - before[1][:30, -30:]).mean()
    assert face_change > 5 * max(corner_change, 1.0)  # the network changed the face, not the background


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVE_CHILD = """
import functools, sys
import codeformer.checkpoint
from codeformer.models.codeformer import CodeFormer
from tests.test_cli_real_network import SMALL_512
codeformer.checkpoint.CodeFormer = functools.partial(CodeFormer, **SMALL_512)
from codeformer.cli import main
sys.exit(main(["serve", "--host", "127.0.0.1", "--port", sys.argv[1], "--weights", sys.argv[2], "--runtime", "torch"]))
"""


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as res:
        return res.read()


def test_cli_serve_on_the_torch_runtime(tmp_path: Path) -> None:
    weights = small_checkpoint(tmp_path / "small.pth")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    server = subprocess.Popen([sys.executable, "-c", SERVE_CHILD, str(port), str(weights)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a bound for a broken start, not a speed check
        while True:
            assert server.poll() is None, server.stdout.read().decode()
            try:
                health = json.loads(_get(base + "/healthz"))
                break
            except OSError:
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert health["status"] == "ok"
        models = json.loads(_get(base + "/v1/models"))["models"][0]
        assert models["runtime"] == "torch" and models["weights"] == str(weights)
        boundary = "cfboundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"w\"\r\n\r\n0.5\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode()
        body += ASTRONAUT.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(base + "/v1/restore", data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=120) as res:
            answer = json.loads(res.read())
        assert res.status == 200 and len(answer["faces"]) == 1 and answer["width"] == 512
    finally:
        server.terminate()  # SIGTERM: uvicorn shuts down cleanly
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()
    assert server.returncode is not None
    with pytest.raises(OSError):
        _get(base + "/healthz", timeout=2)
