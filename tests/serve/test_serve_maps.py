"""``POST /v1/detect?maps=true``: the record carries the evidence map (summary and a PNG overlay)."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from synerdetect.engine.scoring import Scorer  # noqa: E402
from synerdetect.serve import ServeSettings, create_app  # noqa: E402


@pytest.mark.slow  # starts the service: over ~1 s on 2 cores
def test_detect_returns_the_map_on_request(tiny_model):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (72, 120, 3), dtype=np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    app = create_app(Scorer(tiny_model), ServeSettings())
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        plain = c.post("/v1/detect", files=[("files", ("a.png", png, "image/png"))]).json()["results"][0]
        assert plain["map"] is None
        r = c.post("/v1/detect?maps=true", files=[("files", ("a.png", png, "image/png"))])
        assert r.status_code == 200, r.text
        rec = r.json()["results"][0]
        assert rec["logit"] == pytest.approx(plain["logit"], abs=1e-5)  # the map changes nothing in the score
        m = rec["map"]
        x, y, w, h = m["peak"]
        assert 0 <= x < x + w <= 120 and 0 <= y < y + h <= 72
        assert 0 <= m["area_over_threshold"] <= 1 and set(m["agreement"]) == {"same_side", "pearson"}
        head, data = m["overlay_png"].split(",", 1)
        assert head == "data:image/png;base64"
        over = Image.open(io.BytesIO(base64.b64decode(data)))
        assert over.mode == "RGBA" and over.size == (120, 72)
        bad = c.post("/v1/detect?maps=perhaps", files=[("files", ("a.png", png, "image/png"))])
        assert bad.status_code == 400 and "Traceback" not in bad.text
