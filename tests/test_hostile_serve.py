"""The server and the w range as a hostile user meets them: admission by estimated memory, server bugs as 500,
one w range everywhere (issue 13, items 10-12)."""

from __future__ import annotations

import logging
import threading

import pytest
import torch
from fastapi.testclient import TestClient

from codeformer.face.pipeline import RestoreOptions, Restorer
from codeformer.serve.app import ServeConfig, create_app
from tests.test_serve import BlockingModel, face_crop  # noqa: F401  (the 128 px aligned crop fixture)


def _post(client: TestClient, crop: bytes, **fields: str):
    return client.post("/v1/restore", files={"image": ("f.png", crop)}, data={"aligned": "true", **fields})


def test_admission_counts_estimated_memory_not_requests(face_crop):  # noqa: F811
    from codeformer.serve.app import estimated_bytes

    one = estimated_bytes(128, 128, 1)
    assert estimated_bytes(1200, 1200, 8) > 3 * 2**30  # the measured +3.1 GB for ×8 of a 1200² photo
    model = BlockingModel()
    app = create_app(Restorer(model), ServeConfig(max_pending=8, max_memory_bytes=one + one // 2))
    with TestClient(app) as c:
        first: dict[str, int] = {}
        thread = threading.Thread(target=lambda: first.setdefault("status", _post(c, face_crop).status_code))
        thread.start()
        assert model.entered.wait(30)
        assert c.get("/healthz").json()["reserved_bytes"] == one
        busy = _post(c, face_crop)  # one more request is within max_pending, but not within the memory budget
        assert busy.status_code == 503 and "memory" in busy.json()["error"] and "retry-after" in busy.headers
        assert estimated_bytes(128, 128, 8) > one + one // 2
        too_big = _post(c, face_crop, upscale="8")  # alone over the budget: it could never run here
        assert too_big.status_code == 400 and "smaller upscale" in too_big.json()["error"]
        model.release.set()
        thread.join(30)
        assert first["status"] == 200 and _post(c, face_crop).status_code == 200
        assert c.get("/healthz").json()["reserved_bytes"] == 0


class ShapeBugModel:
    def restore(self, x: torch.Tensor, w: float | torch.Tensor = 0.5, adain_latent: bool = True) -> torch.Tensor:
        raise ValueError("internal shape mismatch")  # a bug of ours, not the client's


def test_a_value_error_inside_the_model_is_a_logged_500(face_crop, caplog):  # noqa: F811
    with TestClient(create_app(Restorer(ShapeBugModel())), raise_server_exceptions=False) as c, \
            caplog.at_level(logging.ERROR, logger="codeformer.serve.app"):
        res = _post(c, face_crop)
        bad_field = _post(c, face_crop, upscale="9")
    assert res.status_code == 500 and "internal" in res.json()["error"]
    assert any("unhandled error" in r.getMessage() for r in caplog.records)
    assert bad_field.status_code == 400  # the client's mistake stays a 4xx


def test_one_w_range_everywhere(tmp_path, face_crop, capsys):  # noqa: F811
    from codeformer.cli import main
    from codeformer.face.review import ReviewOptions

    for w in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"w must be in \[0, 1\]"):
            RestoreOptions(w=w)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ReviewOptions(sweep=(0.5, 1.3))
    RestoreOptions(w=0.0), RestoreOptions(w=1.0)
    assert main(["restore", "x.png", "-o", str(tmp_path), "-w", "1.5"]) == 2
    assert "w must be in [0, 1]" in capsys.readouterr().err
    with TestClient(create_app(Restorer(ShapeBugModel()))) as c:
        assert _post(c, face_crop, w="1.5").status_code == 400
