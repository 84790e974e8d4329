"""A bounded load test on 127.0.0.1: 200 requests from 8 concurrent clients, 20 of them malformed. No good
request may be lost (each gets 200 and the same image a lone request gets), every bad one gets a JSON 4xx, and
the server must still be healthy afterwards."""

from __future__ import annotations

import io
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image

from codeformer.serve.app import ServeConfig, create_app
from codeformer.serve.server import ServerThread
from tests.conftest import DATA
from tests.serve_support import tiny_restorer

REQUESTS = 200
CLIENTS = 8
BAD_EVERY = 10  # request i is malformed when i % 10 == 9: 20 of 200
WS = ("0", "0.5", "1")


def face_png() -> bytes:
    rgb = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(rgb[60:200, 150:290]).resize((96, 96)).save(buf, format="PNG")
    return buf.getvalue()


def bad_request(kind: int, crop: bytes) -> dict:
    """Five kinds of malformed request, as keyword arguments for httpx.Client.post."""
    return [
        {"files": {"image": ("x.png", b"GIF89a-but-not-really")}},  # not an image
        {"files": {"image": ("x.png", crop[: len(crop) // 2])}},  # truncated PNG
        {"files": {"image": ("x.png", crop)}, "data": {"w": "7"}},  # w out of range
        {"data": {"w": "0.5"}},  # no image field
        {"files": {"image": ("x.png", b"\0" * (300 << 10))}},  # over the byte limit
    ][kind % 5]


def test_200_requests_8_clients_20_malformed():
    crop = face_png()
    config = ServeConfig(max_bytes=200 << 10, max_pending=CLIENTS * 2, max_batch=8)
    app = create_app(tiny_restorer(), config)
    results: dict[int, tuple[int, str, bytes]] = {}
    lock = threading.Lock()
    local = threading.local()

    def send(i: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=server.url, timeout=60)
        if i % BAD_EVERY == BAD_EVERY - 1:
            kwargs = bad_request(i // BAD_EVERY, crop)
        else:
            kwargs = {"files": {"image": ("f.png", crop)}, "data": {"aligned": "true", "w": WS[i % 3]},
                      "headers": {"Accept": "image/png"}}
        res = client.post("/v1/restore", **kwargs)
        with lock:
            results[i] = (res.status_code, res.headers.get("content-type", ""), res.content)

    with ServerThread(app) as server:
        with httpx.Client(base_url=server.url, timeout=60) as lone:  # the expected image per w, one at a time
            expected = {w: lone.post("/v1/restore", files={"image": ("f.png", crop)},
                                     data={"aligned": "true", "w": w}, headers={"Accept": "image/png"}).content
                        for w in WS}
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(send, range(REQUESTS)))
        health = httpx.get(server.url + "/healthz", timeout=10).json()

    assert len(results) == REQUESTS
    bad = [i for i in range(REQUESTS) if i % BAD_EVERY == BAD_EVERY - 1]
    assert len(bad) == 20
    for i, (status, kind, body) in results.items():
        if i in bad:
            assert 400 <= status < 500 and kind == "application/json" and b'"error"' in body, (i, status, body)
        else:
            assert status == 200 and kind == "image/png", (i, status, body[:200])
            got = np.asarray(Image.open(io.BytesIO(body)), dtype=int)
            want = np.asarray(Image.open(io.BytesIO(expected[WS[i % 3]])), dtype=int)
            assert got.shape == (96, 96, 3) and np.abs(got - want).max() <= 1  # batching changes nothing
    assert health["status"] == "ok" and health["in_progress"] == 0
    assert health["batches"]["faces"] == REQUESTS - len(bad) + len(WS)
