"""The HTTP API with a test client: every route, every error answered as JSON, batching across callers."""

from __future__ import annotations

import base64
import io
import json
import threading

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from codeformer.face.pipeline import Restorer
from codeformer.serve.app import ServeConfig, create_app
from codeformer.serve.batcher import BatchingModel
from tests.conftest import DATA
from tests.serve_support import TinyFaceModel, tiny_restorer

ASTRONAUT = (DATA / "astronaut.png").read_bytes()


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def face_crop() -> bytes:
    """A 128 px crop around the astronaut's face, sent with aligned=true (no detection: fast)."""
    rgb = np.asarray(Image.open(DATA / "astronaut.png").convert("RGB"))
    return png(np.asarray(Image.fromarray(rgb[60:200, 150:290]).resize((128, 128))))


@pytest.fixture(scope="module")
def client(test_device):
    with TestClient(create_app(tiny_restorer(device=test_device), ServeConfig(max_bytes=2 << 20, max_pixels=600 * 600,
                                                            max_output_pixels=1000 * 1000,
                                                            model_info={"id": "tiny", "runtime": "torch"}))) as c:
        yield c


def decode(body: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"]))))


def test_page_and_assets_are_local(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'type="range"' in page.text and "/static/app.js" in page.text
    for asset, kind in (("app.js", "javascript"), ("docs.js", "javascript"), ("style.css", "text/css")):
        res = client.get(f"/static/{asset}")
        assert res.status_code == 200 and kind in res.headers["content-type"]
        assert "https://" not in res.text and "http://" not in res.text  # no CDN
    assert "https://" not in page.text


def test_health_models_and_openapi(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["max_pending"] == 16 and "batches" in health
    assert client.get("/v1/models").json() == {"models": [{"id": "tiny", "runtime": "torch"}]}
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/v1/restore" in spec["paths"]
    form = spec["paths"]["/v1/restore"]["post"]["requestBody"]["content"]["multipart/form-data"]
    fields = spec["components"]["schemas"][form["schema"]["$ref"].split("/")[-1]]["properties"]
    assert {"image", "w", "upscale", "faces", "min_face", "aligned", "draw_boxes", "format"} <= set(fields)
    assert fields["w"]["maximum"] == 1.0 and fields["w"]["default"] == 0.5
    answers = spec["paths"]["/v1/restore"]["post"]["responses"]
    assert "422" not in answers and answers["413"]["content"]["application/json"]["schema"]["$ref"].endswith("Error")
    docs = client.get("/docs")  # our own offline reader, not FastAPI's CDN-backed Swagger UI
    assert docs.status_code == 200 and "/static/docs.js" in docs.text and "https://" not in docs.text


def test_restore_photo_json_report_and_w(client):
    bodies = {}
    for w in ("0", "1"):
        res = client.post("/v1/restore", files={"image": ("astronaut.png", ASTRONAUT, "image/png")},
                          data={"w": w})
        assert res.status_code == 200, res.text
        bodies[w] = res.json()
    body = bodies["0"]
    assert body["media_type"] == "image/png" and (body["width"], body["height"]) == (512, 512)
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    x0, y0, x1, y1 = face["box"]
    assert 150 < x0 < x1 < 300 and 50 < y0 < y1 < 200  # the astronaut's face
    assert len(face["landmarks5"]) == 5 and face["w"] == 0.0 and bodies["1"]["faces"][0]["w"] == 1.0
    assert set(body["timings"]) == {"detect", "align", "restore", "paste"}
    a, b = decode(bodies["0"]), decode(bodies["1"])
    assert a.shape == (512, 512, 3) and np.abs(a.astype(int) - b.astype(int)).max() > 0  # w reaches the model


def test_restore_image_response_and_formats(client, face_crop):
    res = client.post("/v1/restore", files={"image": ("f.png", face_crop, "image/png")},
                      data={"aligned": "true", "upscale": "2"}, headers={"Accept": "image/*"})
    assert res.status_code == 200 and res.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(res.content)).size == (256, 256)
    assert res.headers["x-codeformer-faces"] == "1"
    assert json.loads(res.headers["x-codeformer-report"])["options"]["upscale"] == 2
    res = client.post("/v1/restore", files={"image": ("f.png", face_crop)}, data={"aligned": "true"},
                      headers={"Accept": "image/webp, */*"})
    assert res.headers["content-type"] == "image/webp" and Image.open(io.BytesIO(res.content)).format == "WEBP"
    body = client.post("/v1/restore", files={"image": ("f.png", face_crop)},
                       data={"aligned": "true", "format": "jpeg"}).json()
    assert body["media_type"] == "image/jpeg" and decode(body).shape == (128, 128, 3)


def test_no_face_is_not_an_error(client):
    body = client.post("/v1/restore", files={"image": ("grey.png", png(np.full((64, 64, 3), 128, np.uint8)))}).json()
    assert body["faces"] == [] and decode(body).shape == (64, 64, 3)


@pytest.mark.parametrize("files,data,status,words", [
    (None, {"w": "0.5"}, 400, "image"),
    ({"image": ("x.png", b"not an image at all")}, None, 400, "not an image"),
    ({"image": ("x.png", b"")}, None, 400, "empty"),
    ("crop", {"w": "abc"}, 400, "w"),
    ("crop", {"w": "1.5"}, 400, "w"),
    ("crop", {"upscale": "9"}, 400, "upscale"),
    ("crop", {"faces": "everyone"}, 400, "faces"),
    ("crop", {"format": "gif"}, 400, "format"),
    ("big", None, 400, "pixels"),
    ("crop", {"upscale": "8", "aligned": "true"}, 400, "output would have"),
])
def test_bad_requests_get_json_400(client, face_crop, files, data, status, words):
    if files == "crop":
        files = {"image": ("f.png", face_crop)}
    elif files == "big":
        files = {"image": ("big.png", png(np.zeros((700, 700, 3), np.uint8)))}  # over max_pixels, under max_bytes
    res = client.post("/v1/restore", files=files, data=data)
    assert res.status_code == status, res.text[:300]
    assert res.headers["content-type"] == "application/json" and words in res.json()["error"]


def test_too_many_bytes_is_413(client):
    blob = b"\0" * (3 << 20)
    res = client.post("/v1/restore", files={"image": ("big.png", blob)})
    assert res.status_code == 413 and "limit" in res.json()["error"]
    res = client.post("/v1/restore", content=iter([blob[:1 << 20]] * 3),  # chunked: no Content-Length
                      headers={"content-type": "multipart/form-data; boundary=x"})
    assert res.status_code == 413 and "limit" in res.json()["error"]


def test_unknown_route_and_method(client):
    res = client.get("/v2/nothing")
    assert res.status_code == 404 and res.json() == {"error": "Not Found"}
    res = client.get("/v1/restore")
    assert res.status_code == 405 and "error" in res.json()


class BlockingModel:
    """Holds every call until `release` is set, so a test can fill the queue."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def restore(self, x: torch.Tensor, w: float | torch.Tensor = 0.5, adain_latent: bool = True) -> torch.Tensor:
        self.entered.set()
        self.release.wait(30)
        return x


def test_full_queue_is_503_then_recovers(face_crop):
    model = BlockingModel()
    app = create_app(Restorer(model), ServeConfig(max_pending=1))
    with TestClient(app) as c:
        first: dict[str, int] = {}
        post = lambda: c.post("/v1/restore", files={"image": ("f.png", face_crop)}, data={"aligned": "true"})  # noqa: E731
        thread = threading.Thread(target=lambda: first.setdefault("status", post().status_code))
        thread.start()
        assert model.entered.wait(30)
        assert c.get("/healthz").json()["in_progress"] == 1
        busy = post()
        assert busy.status_code == 503 and "busy" in busy.json()["error"] and busy.headers["retry-after"] == "1"
        model.release.set()
        thread.join(30)
        assert first["status"] == 200 and post().status_code == 200


class BrokenModel:
    def restore(self, x: torch.Tensor, w: float | torch.Tensor = 0.5, adain_latent: bool = True) -> torch.Tensor:
        raise RuntimeError("device lost")


def test_a_bug_is_a_json_500(face_crop):
    with TestClient(create_app(Restorer(BrokenModel())), raise_server_exceptions=False) as c:
        res = c.post("/v1/restore", files={"image": ("f.png", face_crop)}, data={"aligned": "true"})
    assert res.status_code == 500 and "device lost" in res.json()["error"]


def test_batching_model_mixes_callers_and_keeps_each_w():
    """Concurrent calls with different w share model calls, and each gets exactly its own result."""
    inner = TinyFaceModel()
    batcher = BatchingModel(inner, max_batch=8, linger_s=0.05)
    g = torch.Generator().manual_seed(0)
    xs = [torch.rand(1 + i % 2, 3, 512, 512, generator=g) * 2 - 1 for i in range(6)]
    ws = [i / 5 for i in range(6)]
    results: dict[int, torch.Tensor] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, batcher.restore(xs[i], ws[i])))
               for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    batcher.close()
    assert batcher.stats.faces == sum(len(x) for x in xs) and batcher.stats.shared_calls >= 1
    assert max(inner.calls) > 2  # at least one call held more than one caller's faces
    for i in range(6):
        expected = inner.restore(xs[i], ws[i])
        assert float((results[i] - expected).abs().max()) <= 1e-5
    with pytest.raises(RuntimeError, match="closed"):
        batcher.restore(xs[0], 0.5)


def test_shutdown_stops_the_batching_worker(face_crop):
    app = create_app(tiny_restorer())
    with TestClient(app) as c:
        assert c.post("/v1/restore", files={"image": ("f.png", face_crop)}, data={"aligned": "true"}).status_code == 200
        assert app.state.batcher.running
    assert not app.state.batcher.running
