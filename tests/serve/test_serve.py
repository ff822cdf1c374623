"""The HTTP service: endpoints, JSON errors, limits and back-pressure, API keys, metrics and micro-batching (FastAPI
TestClient), and a bounded load test against a real uvicorn server on 127.0.0.1 (slow)."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("prometheus_client")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from synerdetect.engine.calibration import VERDICTS  # noqa: E402
from synerdetect.engine.scoring import Scorer  # noqa: E402
from synerdetect.serve import ServeSettings, create_app, read_api_keys  # noqa: E402
from synerdetect.serve.loadtest import stop_server  # noqa: E402

ERROR_KEYS = {"status", "error", "message"}
BASE = "http://127.0.0.1"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: on a shared 2-core machine spinning OpenMP threads slow tiny forward passes 10-100x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _png(seed: int = 0, size=(80, 64)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB").save(buf, "PNG")
    return buf.getvalue()


class GatedModel:
    """The tiny model behind a gate: counts forward passes (batch sizes) and, once ``block()`` was called, holds each
    pass until ``release()``; ``fail`` makes passes raise."""

    def __init__(self, model):
        self._model = model
        self.calls: list[int] = []
        self.entered = threading.Event()
        self._gate: threading.Event | None = None
        self.fail = False

    def __getattr__(self, name):
        return getattr(self._model, name)

    def parameters(self):
        return self._model.parameters()

    def block(self):
        self._gate = threading.Event()
        self.entered.clear()

    def release(self):
        if self._gate is not None:
            self._gate.set()

    def predict(self, images, **kw):
        self.calls.append(len(images))  # a tensor or the two views of a batch
        self.entered.set()
        if self._gate is not None:
            assert self._gate.wait(30), "test gate never released"
        if self.fail:
            raise RuntimeError("secret internal detail /opt/model.bin")
        return self._model.predict(images, **kw)


@contextmanager
def serving(model, **settings):
    provenance = settings.pop("provenance", False)
    scorer = Scorer(model, provenance=provenance, max_pixels=settings.get("max_pixels", 89_478_485))
    app = create_app(scorer, ServeSettings(**settings))
    # the service answers loopback Host names only (DNS rebinding); TestClient's default Host is "testserver"
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "server never became ready"
            time.sleep(0.02)
        yield client, app


def _assert_json_error(r, status):
    assert r.status_code == status, r.text
    body = r.json()
    assert ERROR_KEYS <= set(body) and body["status"] == status and body["message"]
    assert "Traceback" not in r.text and 'File "' not in r.text
    return body


def _metric(text: str, name: str, **labels) -> float:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


# ----------------------------------------------------------------------------- endpoints
@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_health_ready_model_page_and_docs(tiny_model):
    with serving(tiny_model, provenance=True) as (c, app):
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json()["status"] == "ready"
        info = c.get("/v1/model").json()
        assert info["preset"] == "tiny" and info["device"] == "cpu" and info["calibration"] is None
        assert set(info["base_models"]) == {"clip", "sd"} and info["package_version"]
        assert info["ready"] is True and info["limits"]["max_file_bytes"] == 20_000_000
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        assert 'id="file-input"' in html and 'id="drop-zone"' in html and "v1/detect" in html
        # no CDN, no external fonts: nothing is loaded from another origin
        assert not re.search(r"""(src|href|action)\s*=\s*["']?(https?:)?//|@import|url\(\s*["']?(https?:)?//""", html)
        assert "Content-Security-Policy" in page.headers
        spec = c.get("/openapi.json").json()
        assert "/v1/detect" in spec["paths"] and "multipart/form-data" in str(spec["paths"]["/v1/detect"])
        # /docs works offline: every script and stylesheet it names is served by this app
        docs = c.get("/docs")
        assert docs.status_code == 200
        assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", docs.text)
        assert assets and not [a for a in assets if "//" in a], assets
        for a in assets:
            got = c.get(a)
            assert got.status_code == 200 and len(got.content) > 100, a
        assert c.get("/redoc").status_code == 200


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_detect_scores_each_file_and_reports_bad_ones_separately(tiny_model):
    good, other = _png(1), _png(2, size=(96, 72))
    with serving(tiny_model, provenance=True) as (c, app):
        r = c.post(
            "/v1/detect",
            files=[
                ("files", ("a.png", good, "image/png")),
                ("files", ("notes.txt", b"hello world", "text/plain")),
                ("files", ("cut.png", good[:150], "image/png")),
                ("files", ("b.png", other, "image/png")),
            ],
        )
        assert r.status_code == 200, r.text
        doc = r.json()
        assert (doc["n_images"], doc["n_scored"], doc["n_errors"]) == (4, 2, 2)
        res = {x["name"]: x for x in doc["results"]}
        assert [x["name"] for x in doc["results"]] == ["a.png", "notes.txt", "cut.png", "b.png"]
        assert res["notes.txt"]["error_kind"] == "not_an_image" and res["notes.txt"]["label"] is None
        assert res["cut.png"]["error_kind"] == "corrupt" and res["cut.png"]["error"]
        expected = Scorer(tiny_model).score([("a.png", good), ("b.png", other)])
        for e in expected:
            got = res[e["name"]]
            assert got["error"] is None and got["verdict"] in ("real", "fake")
            assert got["logit"] == pytest.approx(e["logit"], abs=1e-5)
            assert got["prob_fake"] == pytest.approx(e["prob_fake"], abs=1e-6) and got["sha256"] == e["sha256"]
            assert got["provenance"]["declared_ai"] is None and got["timings"]["queue_ms"] >= 0
        # one image as the raw body, named by ?name=
        raw = c.post("/v1/detect?name=raw.png", content=good, headers={"content-type": "image/png"})
        assert raw.status_code == 200
        assert raw.json()["results"][0]["name"] == "raw.png"
        assert raw.json()["results"][0]["logit"] == pytest.approx(res["a.png"]["logit"], abs=1e-5)
        octet = c.post("/v1/detect", content=good, headers={"content-type": "application/octet-stream"})
        assert octet.status_code == 200


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_errors_are_json_with_the_right_status(tiny_model):
    good = _png(3)
    with serving(
        tiny_model, max_file_bytes=len(good) + 10, max_request_bytes=200_000, max_files=3, max_pixels=200 * 200
    ) as (c, app):
        # too large: raw body (413 before it is read), and one multipart file (its own error, then 413)
        _assert_json_error(c.post("/v1/detect", content=good + b"x" * 100, headers={"content-type": "image/png"}), 413)
        body = _assert_json_error(c.post("/v1/detect", files=[("files", ("big.png", good + b"x" * 100))]), 413)
        assert body["results"][0]["error_kind"] == "too_large" and body["results"][0]["name"] == "big.png"
        # a big file among good ones: only it fails
        r = c.post("/v1/detect", files=[("files", ("big.png", good + b"x" * 100)), ("files", ("ok.png", good))])
        assert r.status_code == 200 and [x["error_kind"] for x in r.json()["results"]] == ["too_large", None]
        # not an image: 415 (raw or multipart), and a text Content-Type
        body = _assert_json_error(
            c.post("/v1/detect", content=b"GIF89a-not-really", headers={"content-type": "image/gif"}), 415
        )
        assert "not an image" in body["message"]
        _assert_json_error(c.post("/v1/detect", files=[("files", ("x.jpg", b"\x00" * 64))]), 415)
        _assert_json_error(c.post("/v1/detect", content=b"{}", headers={"content-type": "application/json"}), 415)
        # corrupt / truncated and too many pixels: 422
        _assert_json_error(c.post("/v1/detect", files=[("files", ("cut.png", good[:200]))]), 422)
        buf = io.BytesIO()
        Image.new("RGB", (300, 300), (9, 9, 9)).save(buf, "PNG")  # few bytes, too many pixels
        big = buf.getvalue()
        body = _assert_json_error(c.post("/v1/detect", files=[("files", ("huge.png", big))]), 422)
        assert body["results"][0]["error_kind"] == "too_many_pixels"
        # nothing to score: 400
        _assert_json_error(c.post("/v1/detect", content=b""), 400)
        body = _assert_json_error(c.post("/v1/detect", files=[("note", (None, b"no file here"))]), 400)
        assert body["error"] == "no_files"
        _assert_json_error(
            c.post("/v1/detect", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}),
            400,
        )
        # too many files: 413
        files = [("files", (f"{i}.png", good)) for i in range(4)]
        assert _assert_json_error(c.post("/v1/detect", files=files), 413)["error"] == "too_many_files"
        # bodies sent without Content-Length (chunked) are cut off at the limit while they stream
        chunks = [b"x" * 4096] * 8
        r = c.post("/v1/detect", content=iter(chunks), headers={"content-type": "image/png"})
        assert _assert_json_error(r, 413)["error"] == "too_large"
        r = c.post(
            "/v1/detect",
            content=iter([b"--x\r\n"] + [b"y" * 65536] * 10),
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert _assert_json_error(r, 413)["error"] == "request_too_large"
        # unknown path and wrong method: JSON too
        _assert_json_error(c.get("/nope"), 404)
        _assert_json_error(c.get("/v1/detect"), 405)


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_internal_errors_are_json_without_details(tiny_model):
    m = GatedModel(tiny_model)
    with serving(m) as (c, app):
        m.fail = True
        body = _assert_json_error(c.post("/v1/detect", content=_png(5)), 500)
        assert "secret" not in json.dumps(body) and "/opt/model.bin" not in json.dumps(body)
        m.fail = False
        assert c.post("/v1/detect", content=_png(5)).status_code == 200  # the worker survived
        assert _metric(c.get("/metrics").text, "synerdetect_errors_total", kind="internal") == 1


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_api_key(tiny_model, tmp_path):
    keyfile = tmp_path / "keys"
    keyfile.write_text("# keys\n\nsecret-key-1\nsecret-key-2\n")
    keys = read_api_keys(keyfile)
    assert keys == ("secret-key-1", "secret-key-2")
    (tmp_path / "empty").write_text("# nothing\n")
    with pytest.raises(ValueError, match="no key"):
        read_api_keys(tmp_path / "empty")
    from synerdetect.cli import main

    # the serve command refuses a bad key file in one line, before loading any model
    assert main(["serve", "--checkpoint", str(tmp_path / "none"), "--api-key-file", str(tmp_path / "empty")]) == 2
    with serving(tiny_model, api_keys=keys) as (c, app):
        img = _png(6)
        r = _assert_json_error(c.post("/v1/detect", content=img), 401)
        assert r["error"] == "unauthorized"
        assert c.post("/v1/detect", content=img).headers["www-authenticate"].startswith("Bearer")
        _assert_json_error(c.post("/v1/detect", content=img, headers={"Authorization": "Bearer wrong-key-0"}), 401)
        _assert_json_error(c.get("/v1/model"), 401)
        _assert_json_error(c.get("/metrics"), 401)
        assert c.post("/v1/detect", content=img, headers={"Authorization": "Bearer secret-key-1"}).status_code == 200
        assert c.post("/v1/detect", content=img, headers={"X-API-Key": "secret-key-2"}).status_code == 200
        assert c.get("/v1/model", headers={"X-API-Key": "secret-key-1"}).json()["limits"]["api_key_required"]
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200  # health stays open
        assert c.get("/").status_code == 200


def test_public_bind_needs_a_key_or_an_explicit_opt_out(tmp_path, capsys, monkeypatch):
    from synerdetect.cli import main
    from synerdetect.serve.limits import is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "", "10.1.2.3", "192.168.0.5", "example.org"))
    loads: list[str] = []

    def fake_load(_cls, checkpoint, **_kw):
        loads.append(str(checkpoint))
        raise RuntimeError("model loading reached")

    monkeypatch.setattr(Scorer, "from_checkpoint", classmethod(fake_load))
    ckpt = str(tmp_path / "ckpt")
    for host in ("0.0.0.0", "::", "10.1.2.3"):
        assert main(["serve", "--checkpoint", ckpt, "--host", host]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--api-key-file" in err and "--insecure-no-auth" in err, err
    assert loads == []  # refused before any model was loaded
    # loopback needs nothing; a public host with the explicit opt-out or with a key file goes on to load the model
    keyfile = tmp_path / "keys"
    keyfile.write_text("secret-key-1\n")
    for extra in (
        ["--host", "127.0.0.1"],
        ["--host", "0.0.0.0", "--insecure-no-auth"],
        ["--host", "0.0.0.0", "--api-key-file", str(keyfile)],
    ):
        assert main(["serve", "--checkpoint", ckpt, *extra]) == 2
        assert "model loading reached" in capsys.readouterr().err
    assert loads == [ckpt] * 3


def test_api_keys_are_compared_in_constant_time(monkeypatch):
    from synerdetect.serve import limits

    calls: list[tuple[bytes, bytes]] = []
    real = limits.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(limits.hmac, "compare_digest", spy)
    keys = ("secret-key-1", "secret-key-2")
    assert limits.api_key_ok(keys, "Bearer secret-key-2", None)
    assert (b"secret-key-2", b"secret-key-2") in calls
    calls.clear()
    assert not limits.api_key_ok(keys, "Bearer secret-key-3", "nope")
    assert len(calls) == 4  # every offered value against every key: no early exit that would leak which matched
    assert not limits.api_key_ok(keys, None, None) and limits.api_key_ok((), None, None)


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_cors_is_off_unless_an_origin_is_named(tiny_model):
    origin = {"Origin": "https://app.example.org"}
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    with serving(tiny_model) as (c, app):
        assert "access-control-allow-origin" not in c.get("/v1/model", headers=origin).headers
        assert "access-control-allow-origin" not in c.options("/v1/detect", headers=preflight).headers
    with serving(tiny_model, cors_origins=("https://app.example.org",)) as (c, app):
        assert c.get("/v1/model", headers=origin).headers["access-control-allow-origin"] == origin["Origin"]
        assert c.options("/v1/detect", headers=preflight).status_code == 200
        other = {"Origin": "https://evil.example"}
        assert "access-control-allow-origin" not in c.get("/v1/model", headers=other).headers
    with pytest.raises(ValueError, match="name the origins"):
        ServeSettings(cors_origins=("*",))


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_only_bound_host_names_are_answered(tiny_model):
    from synerdetect.serve.limits import bound_host_names

    rebind = {"Host": "rebind.attacker.example"}
    with serving(tiny_model) as (c, app):
        for path in ("/v1/model", "/metrics", "/", "/docs"):
            r = c.get(path, headers=rebind)
            assert r.status_code == 400 and "/tmp" not in r.text, (path, r.text)
        assert c.post("/v1/detect", content=_png(1), headers=rebind).status_code == 400
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
            assert c.get("/v1/model", headers={"Host": host}).status_code == 200, host
        # health probes stay open whatever the Host (an orchestrator's probe names the pod's address)
        assert c.get("/healthz", headers=rebind).status_code == 200
        assert c.get("/readyz", headers=rebind).status_code == 200
        text = c.get("/metrics").text
        assert _metric(text, "synerdetect_requests_total", endpoint="/v1/model", method="GET", status="400") == 1
    with serving(tiny_model, allowed_hosts=("detect.example.org", "*.svc.local")) as (c, app):
        assert c.get("/v1/model", headers={"Host": "detect.example.org"}).status_code == 200
        assert c.get("/v1/model", headers={"Host": "api.svc.local:8000"}).status_code == 200
        assert c.get("/v1/model", headers=rebind).status_code == 400
    # what `synerdetect serve --host H --allowed-host N` accepts besides loopback: the bind address when it is one
    assert bound_host_names("127.0.0.1") == ("127.0.0.1",)
    assert bound_host_names("0.0.0.0", ["detect.example.org"]) == ("detect.example.org",)
    assert bound_host_names("::") == () and bound_host_names("fe80::1") == ("[fe80::1]",)
    assert bound_host_names("10.1.2.3", ["a.example"]) == ("10.1.2.3", "a.example")
    with pytest.raises(ValueError, match="allowed host"):
        ServeSettings(allowed_hosts=("evil*.example",))


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_no_filesystem_path_reaches_a_client(tiny_model, tmp_path):
    from synerdetect.serve.service import public_info

    ckpt = tiny_model.save_pretrained(tmp_path / "ckpt")
    app = create_app(Scorer.from_checkpoint(ckpt, device="cpu", provenance=False), ServeSettings())
    with TestClient(app, base_url=BASE) as c:
        _wait(lambda: c.get("/readyz").status_code == 200)
        info = c.get("/v1/model")
        assert info.status_code == 200 and str(tmp_path) not in info.text and "/ckpt" not in info.text
        assert info.json()["checkpoint"] == "ckpt" and set(info.json()["base_models"]) == {"clip", "sd"}
    # hub repo ids and names are kept; absolute and existing paths keep their last component
    doc = {"clip": "openai/clip-vit-base-patch32", "a": "/srv/x/final/", "b": [str(ckpt)], "c": "C:\\m\\sd", "n": 3}
    assert public_info(doc) == {"clip": "openai/clip-vit-base-patch32", "a": "final", "b": ["ckpt"], "c": "sd", "n": 3}


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_a_client_that_disconnects_mid_upload_is_not_an_internal_error(tiny_model, caplog):
    import asyncio

    with serving(tiny_model) as (c, app):
        messages = iter(
            [{"type": "http.request", "body": _png(2)[:100], "more_body": True}, {"type": "http.disconnect"}]
        )
        sent: list[dict] = []

        async def receive():
            return next(messages)

        async def send(message):
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/detect",
            "raw_path": b"/v1/detect",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (b"content-type", b"image/png")],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        caplog.clear()
        asyncio.run(app(scope, receive, send))  # the app as uvicorn calls it, with a client that goes away
        text = c.get("/metrics").text
        assert _metric(text, "synerdetect_errors_total", kind="client_disconnect") == 1
        assert _metric(text, "synerdetect_errors_total", kind="internal") == 0
        assert _metric(text, "synerdetect_requests_total", endpoint="/v1/detect", method="POST", status="499") == 1
        assert _metric(text, "synerdetect_requests_total", endpoint="/v1/detect", method="POST", status="500") == 0
        assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
        assert c.post("/v1/detect", content=_png(2)).status_code == 200  # nothing left broken


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_client_file_names_are_never_used_as_paths(tiny_model, tmp_path):
    target = tmp_path / "written.png"
    names = [str(target), "../../" + str(tmp_path.name) + "/written.png"]
    with serving(tiny_model) as (c, app):
        r = c.post("/v1/detect", files=[("files", (n, _png(7), "image/png")) for n in names])
        assert r.status_code == 200 and [x["name"] for x in r.json()["results"]] == names
        r = c.post("/v1/detect", content=_png(8), params={"name": str(target)})
        assert r.status_code == 200 and r.json()["results"][0]["name"] == str(target)
    assert not target.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_api_results_equal_offline_predict_on_the_same_checkpoint(tiny_model, tmp_path):
    ckpt = tiny_model.save_pretrained(tmp_path / "ckpt")
    paths = []
    for i in range(5):
        p = tmp_path / f"img{i}.png"
        p.write_bytes(_png(40 + i, size=(64 + 16 * i, 72 + 8 * i)))
        paths.append(str(p))
    offline = Scorer.from_checkpoint(ckpt, device="cpu", provenance=False).score_paths(paths, progress=False)
    app = create_app(Scorer.from_checkpoint(ckpt, device="cpu", provenance=False), ServeSettings(max_batch=2))
    with TestClient(app, base_url=BASE) as c:
        _wait(lambda: c.get("/readyz").status_code == 200)
        served = c.post("/v1/detect", files=[("files", (Path(p).name, Path(p).read_bytes())) for p in paths[:3]])
        served = served.json()["results"] + [
            c.post("/v1/detect", content=Path(p).read_bytes(), params={"name": Path(p).name}).json()["results"][0]
            for p in paths[3:]
        ]
    assert len(offline) == len(served) == 5
    for off, api in zip(offline, served, strict=True):
        assert api["error"] is None and Path(off["name"]).name == api["name"]
        assert abs(api["logit"] - off["logit"]) < 1e-5, (api["logit"], off["logit"])
        assert api["verdict"] == off["verdict"] and api["label"] == off["label"]
        assert abs(api["prob_fake"] - off["prob_fake"]) < 1e-5 and api["sha256"] == off["sha256"]


# ----------------------------------------------------------------------------- back-pressure and batching
def _post_in_thread(client, results, key, content):
    def run():
        results[key] = client.post("/v1/detect", content=content, headers={"content-type": "image/png"})

    t = threading.Thread(target=run)
    t.start()
    return t


def _wait(cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_full_queue_answers_429_with_retry_after(tiny_model):
    m = GatedModel(tiny_model)
    with serving(m, max_batch=1, max_queue=1, max_wait_ms=0) as (c, app):
        batcher = app.state.batcher
        m.block()
        out: dict = {}
        a = _post_in_thread(c, out, "a", _png(7))
        assert m.entered.wait(30)  # the worker holds request a's image in a forward pass
        b = _post_in_thread(c, out, "b", _png(8))
        _wait(lambda: batcher.depth == 1)  # request b's image fills the queue
        r = c.post("/v1/detect", content=_png(9))
        body = _assert_json_error(r, 429)
        assert body["error"] == "queue_full" and int(r.headers["retry-after"]) >= 1
        m.release()
        a.join(30)
        b.join(30)
        assert out["a"].status_code == 200 and out["b"].status_code == 200
        text = c.get("/metrics").text
        assert _metric(text, "synerdetect_errors_total", kind="queue_full") == 1
        assert _metric(text, "synerdetect_requests_total", endpoint="/v1/detect", method="POST", status="429") == 1


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_too_many_requests_in_flight_answers_429(tiny_model):
    m = GatedModel(tiny_model)
    with serving(m, max_inflight=1) as (c, app):
        m.block()
        out: dict = {}
        a = _post_in_thread(c, out, "a", _png(7))
        assert m.entered.wait(30)
        assert _assert_json_error(c.post("/v1/detect", content=_png(8)), 429)["error"] == "rate_limited"
        m.release()
        a.join(30)
        assert out["a"].status_code == 200


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_request_timeout_is_503_and_the_abandoned_image_is_never_scored(tiny_model):
    m = GatedModel(tiny_model)
    with serving(m, max_batch=1, request_timeout_s=1.0, max_wait_ms=0) as (c, app):
        m.calls.clear()
        m.block()
        out: dict = {}
        a = _post_in_thread(c, out, "a", _png(10))  # stuck in the forward pass
        assert m.entered.wait(30)
        r = c.post("/v1/detect", content=_png(11))  # stuck in the queue behind it
        assert _assert_json_error(r, 503)["error"] == "timeout" and r.headers["retry-after"]
        a.join(30)
        assert out["a"].status_code == 503
        m.release()
        _wait(lambda: app.state.batcher.depth == 0 and not app.state.batcher.busy)
        time.sleep(0.1)
        assert m.calls == [1]  # request b's image was dropped from the queue, not scored for nobody


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_concurrent_requests_share_forward_passes(tiny_model):
    m = GatedModel(tiny_model)
    # deterministic: the worker is held on the first request while five more queue up, then one pass takes them all
    with serving(m, max_batch=8, max_wait_ms=50) as (c, app):
        m.calls.clear()
        m.block()
        out: dict = {}
        threads = [_post_in_thread(c, out, 0, _png(20))]
        assert m.entered.wait(30)
        threads += [_post_in_thread(c, out, i, _png(20 + i)) for i in range(1, 6)]
        _wait(lambda: app.state.batcher.depth == 5)
        m.release()
        for t in threads:
            t.join(30)
        assert all(out[i].status_code == 200 for i in range(6))
        assert m.calls == [1, 5]  # 6 requests, 2 forward passes
        assert sorted(out[i].json()["results"][0]["timings"]["batch_size"] for i in range(6)) == [1, 5, 5, 5, 5, 5]
        text = c.get("/metrics").text
        assert _metric(text, "synerdetect_batch_size_count") == 2  # the warm-up pass is not a served batch
        assert _metric(text, "synerdetect_batch_size_sum") == 6
    # with nothing held: four simultaneous requests within max-wait share passes
    m2 = GatedModel(tiny_model)
    with serving(m2, max_batch=4, max_wait_ms=2000) as (c, app):
        m2.calls.clear()
        out = {}
        barrier = threading.Barrier(4)

        def go(i):
            barrier.wait()
            out[i] = c.post("/v1/detect", content=_png(30 + i))

        ts = [threading.Thread(target=go, args=(i,)) for i in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert all(out[i].status_code == 200 for i in range(4))
        assert sum(m2.calls) == 4 and len(m2.calls) < 4


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_metrics_content(tiny_model):
    with serving(tiny_model) as (c, app):
        c.post("/v1/detect", files=[("files", ("a.png", _png(40))), ("files", ("b.txt", b"plain text"))])
        c.post("/v1/detect", content=b"")
        r = c.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        text = r.text
        assert _metric(text, "synerdetect_requests_total", endpoint="/v1/detect", method="POST", status="200") == 1
        assert _metric(text, "synerdetect_requests_total", endpoint="/v1/detect", method="POST", status="400") == 1
        assert _metric(text, "synerdetect_images_total", outcome="scored") == 1
        assert _metric(text, "synerdetect_images_total", outcome="error") == 1
        assert _metric(text, "synerdetect_errors_total", kind="not_an_image") == 1
        assert _metric(text, "synerdetect_errors_total", kind="no_files") == 1
        assert _metric(text, "synerdetect_request_duration_seconds_count", endpoint="/v1/detect") == 2
        assert _metric(text, "synerdetect_batch_size_count") == 1
        assert _metric(text, "synerdetect_batch_duration_seconds_count") == 1
        assert "synerdetect_queue_depth 0.0" in text
        assert _metric(text, "synerdetect_ready") == 1
        # drift: one scored image -> one logit observation, one verdict, one decision by the full path
        assert _metric(text, "synerdetect_logit_count", decided_by="full") == 1
        assert _metric(text, "synerdetect_decided_total", path="full") == 1
        verdicts = sum(_metric(text, "synerdetect_verdicts_total", verdict=v, source="model") for v in VERDICTS)
        assert verdicts == 1
        assert "no certified calibration" in c.get("/v1/model").json()["promise"]


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_drift_metrics_and_promise_with_a_certified_calibration(tiny_model):
    from synerdetect.engine.calibration import Calibration

    cal = Calibration(
        band=[-1e-4, 1e-4],
        max_fpr={"threshold": 0.0, "target": 0.01, "delta": 0.05},
        metrics={"n_images": 400, "n_uncertain": 30},
    )
    app = create_app(Scorer(tiny_model, calibration=cal), ServeSettings())
    with TestClient(app, base_url=BASE, raise_server_exceptions=False) as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        info = c.get("/v1/model").json()
        assert info["promise"].startswith("on images like the validation set, at most 1% of real photos are flagged")
        assert "95% confidence" in info["promise"] and info["calibration"]["max_fpr"]["target"] == 0.01
        files = [("files", (f"{i}.png", _png(i))) for i in range(3)]
        recs = c.post("/v1/detect", files=files).json()["results"]
        text = c.get("/metrics").text
    logits = [r["logit"] for r in recs]
    assert _metric(text, "synerdetect_logit_count", decided_by="full") == 3
    # cumulative buckets: the count at or below 0 is the number of non-positive logits
    assert _metric(text, "synerdetect_logit_bucket", decided_by="full", le="0.0") == sum(x <= 0 for x in logits)
    for v in VERDICTS:
        want = sum(r["verdict"] == v for r in recs)
        assert _metric(text, "synerdetect_verdicts_total", verdict=v, source="model") == want
    assert _metric(text, "synerdetect_validation_share", verdict="uncertain") == pytest.approx(30 / 400)


def test_model_info_has_no_promise_outside_the_certified_mode_and_view(tiny_model, monkeypatch):
    """/v1/model's promise (shown by the page next to every verdict) follows the service's mode and view: a
    calibration certified for --mode full on the center view promises nothing under the cascade or on tiles."""
    from synerdetect.engine.calibration import Calibration
    from synerdetect.serve.service import DetectService

    cal = Calibration(max_fpr={"threshold": 0.0, "target": 0.01, "delta": 0.05}, cascade={"band": [-0.5, 0.5]})
    info = DetectService(Scorer(tiny_model, calibration=cal)).info
    assert info["promise"].startswith("on images like the validation set, at most 1%") and info["view"] == "center"
    info = DetectService(Scorer(tiny_model, calibration=cal, mode="cascade")).info
    assert info["promise"].startswith("no promise") and "not under --mode cascade" in info["promise"]
    monkeypatch.setattr(tiny_model.cfg.data, "eval_view", "tiles")
    info = DetectService(Scorer(tiny_model, calibration=cal)).info
    assert info["promise"].startswith("no promise") and "none for the tiles view" in info["promise"]


# ----------------------------------------------------------------------------- a real server under load
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def real_server(model, **settings):
    """The app on a real uvicorn server (a thread of this process, 127.0.0.1) with the configuration
    `synerdetect serve` uses; yields the port."""
    import uvicorn

    from synerdetect.serve.server import uvicorn_config

    settings = ServeSettings(**settings)
    port = _free_port()
    app = create_app(Scorer(model, provenance=False), settings)
    server = uvicorn.Server(uvicorn_config(app, settings, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:

        def ready() -> bool:
            try:
                return b" 200 " in _http(port, CLOSE % b"/readyz")[0][:16]
            except OSError:  # not listening yet
                return False

        _wait(ready, 60)
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


CLOSE = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def _http(port: int, request: bytes, limit_s: float = 10.0) -> tuple[bytes, float]:
    """Send ``request`` on a new connection and read until the server closes it (at most ``limit_s``): the bytes
    read and the seconds it took. A connection still open after ``limit_s`` gives ``float("inf")``."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit_s) as s:
        t0 = time.monotonic()
        if request:
            s.sendall(request)
        return _read_to_close(s, t0, limit_s)


def _read_to_close(s: socket.socket, t0: float, limit_s: float) -> tuple[bytes, float]:
    data = b""
    while time.monotonic() - t0 < limit_s:
        s.settimeout(max(0.01, limit_s - (time.monotonic() - t0)))
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data, time.monotonic() - t0
        if not chunk:
            return data, time.monotonic() - t0
        data += chunk
    return data, float("inf")


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_http_layer_bounds_header_size_and_time(tiny_model):
    head_s = 2.0
    with real_server(tiny_model, header_timeout_s=head_s, max_connections=5) as port:
        ok, _ = _http(port, CLOSE % b"/healthz")
        assert ok.startswith(b"HTTP/1.1 200")
        # a head still incomplete beyond max_header_bytes (32 KiB) is refused, not buffered (h11 checks the limit
        # between socket reads of 64 KiB: a larger head that arrives whole in one read passes)
        big, _ = _http(port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
        assert big.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), big[:80]
        # a rebinding page's Host gets 400 from the real server too
        rebind, _ = _http(port, CLOSE.replace(b"127.0.0.1", b"rebind.attacker.example") % b"/v1/model")
        assert rebind.startswith(b"HTTP/1.1 400") and b"/tmp" not in rebind

        # idle, trickling (a byte every 0.25 s), and trickling after a first answer on a keep-alive connection:
        # each is closed head_s after it opened or after its answer
        out: dict = {}

        def idle():
            out["idle"] = _http(port, b"", limit_s=head_s + 8)

        def trickle(keep_alive_first: bool):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                if keep_alive_first:
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                    first = s.recv(4096)
                    assert first.startswith(b"HTTP/1.1 200"), first
                t0, data = time.monotonic(), b""
                for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
                    if time.monotonic() - t0 > head_s + 8:
                        break
                    try:
                        s.sendall(bytes([byte]))
                    except OSError:
                        break
                    s.settimeout(0.25)
                    try:
                        data = s.recv(4096)
                        break
                    except TimeoutError:
                        continue
                rest, _ = _read_to_close(s, t0, head_s + 8)
                out["keep_alive" if keep_alive_first else "trickle"] = (data + rest, time.monotonic() - t0)

        def unread_body():  # an endpoint that never reads the body answers at once; the rest may not trickle on
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n")
                t0, data = time.monotonic(), b""
                for _ in range(4 * int(head_s + 8)):
                    try:
                        s.sendall(b"x")
                        s.settimeout(0.25)
                        chunk = s.recv(4096)
                    except TimeoutError:
                        continue
                    except OSError:
                        break
                    if not chunk:
                        break
                    data += chunk
                out["unread_body"] = (data, time.monotonic() - t0)

        jobs = ((idle, ()), (trickle, (False,)), (trickle, (True,)), (unread_body, ()))
        threads = [threading.Thread(target=f, args=a) for f, a in jobs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(head_s + 20)
        assert out["idle"][0] == b"" and head_s - 0.1 < out["idle"][1] < head_s + 2, out["idle"]
        for name in ("trickle", "keep_alive"):
            data, seconds = out[name]
            assert data.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in data, (name, data)
            assert seconds < head_s + 2, (name, seconds)
        data, seconds = out["unread_body"]
        assert data.startswith(b"HTTP/1.1 405") and seconds < head_s + 2, out["unread_body"]

        # at most max_connections open at once: with four idle connections the fifth one's request gets 503
        idlers = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        time.sleep(0.1)
        busy, _ = _http(port, CLOSE % b"/healthz")
        for s in idlers:
            s.close()
        assert busy.startswith(b"HTTP/1.1 503"), busy[:80]

        # a client that goes away mid-upload is counted as such, not as an internal error
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(
                b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                b"Content-Length: 1000000\r\n\r\n" + _png(3)[:500]
            )
            time.sleep(0.2)

        def metrics() -> str:
            return _http(port, CLOSE % b"/metrics")[0].decode()

        _wait(lambda: _metric(metrics().split("\r\n\r\n", 1)[1], "synerdetect_errors_total", kind="client_disconnect"))
        assert _metric(metrics().split("\r\n\r\n", 1)[1], "synerdetect_errors_total", kind="internal") == 0


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_shutdown_does_not_wait_for_a_decode_in_progress():
    # the process must end at once although a decode thread is busy (a ThreadPoolExecutor's thread held it to the
    # end of its work: it is joined at interpreter exit) and queued decodes are cancelled, not run
    script = (
        "import threading, time\n"
        "from synerdetect.serve.batcher import DaemonPool\n"
        "pool = DaemonPool(1, 'decode')\n"
        "started = threading.Event()\n"
        "busy = pool.submit(lambda: (started.set(), time.sleep(120)))\n"
        "queued = pool.submit(time.sleep, 120)\n"
        "assert started.wait(30)\n"
        "pool.shutdown(wait=False, cancel_futures=True)\n"
        "assert queued.cancelled() and not busy.done()\n"
        "print('exiting', flush=True)\n"
    )
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90)
    assert r.returncode == 0 and "exiting" in r.stdout, r.stderr[-2000:]
    assert time.monotonic() - t0 < 60  # the 120 s decode did not hold the process


@pytest.mark.slow
def test_load_on_a_real_uvicorn_server(tiny_model, tmp_path):
    import httpx

    ckpt = tiny_model.save_pretrained(tmp_path / "ckpt")
    port = _free_port()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "synerdetect.cli",
            "serve",
            "--checkpoint",
            str(ckpt),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-batch",
            "8",
            "--max-wait-ms",
            "20",
            "--max-queue",
            "8",
            "--device",
            "cpu",
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "server did not become ready"
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        rss_ready = _rss_mb(proc.pid)
        images = [_png(100 + i, size=(64 + 8 * i, 64)) for i in range(8)]
        n_clients, per_client, time_limit = 8, 5, 120.0
        results: list[tuple[int, float]] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + time_limit

        def client(k: int) -> None:
            with httpx.Client(base_url=base, timeout=60) as h:
                for j in range(per_client):
                    if time.monotonic() > stop_at:
                        return
                    files = [
                        ("files", (f"{k}-{j}-{i}.png", images[(k + j + i) % 8], "image/png"))
                        for i in range(1 + (k + j) % 2)
                    ]
                    t0 = time.perf_counter()
                    r = h.post("/v1/detect", files=files)
                    with lock:
                        results.append((r.status_code, time.perf_counter() - t0))
                    if r.status_code == 429:
                        time.sleep(float(r.headers.get("retry-after", "1")) / 4)

        t0 = time.monotonic()
        threads = [threading.Thread(target=client, args=(k,)) for k in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(time_limit + 60)
        wall = time.monotonic() - t0
        rss_after = _rss_mb(proc.pid)
        statuses = [s for s, _ in results]
        assert len(results) == n_clients * per_client, "the load test ran out of time"
        assert set(statuses) <= {200, 429}, statuses  # no 5xx, nothing else
        assert statuses.count(200) >= len(statuses) // 2
        lat = sorted(t for s, t in results if s == 200)
        metrics = httpx.get(base + "/metrics", timeout=10).text
        batches = _metric(metrics, "synerdetect_batch_size_count")
        scored = _metric(metrics, "synerdetect_images_total", outcome="scored")
        assert 0 < batches < scored  # images from concurrent requests shared forward passes
        assert rss_after - rss_ready < 400, (rss_ready, rss_after)  # bounded memory, no growth with requests
        summary = {
            "requests": len(results),
            "ok": statuses.count(200),
            "429": statuses.count(429),
            "wall_s": round(wall, 2),
            "p50_ms": round(1e3 * lat[len(lat) // 2], 1),
            "p95_ms": round(1e3 * lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1),
            "images_scored": scored,
            "batches": batches,
            "mean_batch": round(scored / batches, 2),
            "rss_ready_mb": round(rss_ready, 1),
            "rss_after_mb": round(rss_after, 1),
        }
        print("\nload test:", json.dumps(summary))
        (tmp_path / "load_summary.json").write_text(json.dumps(summary))
        if os.environ.get("SYNERDETECT_LOAD_SUMMARY"):
            Path(os.environ["SYNERDETECT_LOAD_SUMMARY"]).write_text(json.dumps(summary))
        # graceful shutdown: SIGTERM while a request is in flight (its body half sent) stops accepting new
        # connections, lets that request finish with 200, then the process exits 0
        first, rest = images[0][:100], images[0][100:]
        half_sent, go_on = threading.Event(), threading.Event()
        inflight: dict = {}

        def body():
            yield first
            half_sent.set()
            assert go_on.wait(30)
            yield rest

        def slow_request() -> None:
            try:
                inflight["r"] = httpx.post(base + "/v1/detect", content=body(), params={"name": "late.png"}, timeout=60)
            except Exception as e:  # noqa: BLE001 - reported by the assertion below
                inflight["error"] = repr(e)

        t = threading.Thread(target=slow_request)
        t.start()
        assert half_sent.wait(30)
        time.sleep(0.5)  # the server has the first chunk
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while True:  # new connections are refused once the server stops listening
            try:
                httpx.get(base + "/healthz", timeout=1)
            except httpx.ConnectError:
                break
            assert time.monotonic() < deadline, "the server kept accepting connections after SIGTERM"
            time.sleep(0.1)
        assert proc.poll() is None  # still finishing the request in flight
        go_on.set()
        t.join(60)
        assert "r" in inflight, inflight.get("error")
        assert inflight["r"].status_code == 200, inflight["r"].text
        assert inflight["r"].json()["results"][0]["name"] == "late.png"
        rc = proc.wait(30)
        assert rc == 0, (tmp_path / "server.log").read_text()[-3000:]
    finally:
        stop_server(proc, 30)
        log.close()


@pytest.mark.slow
def test_bench_serve_load_test_reports_every_field(tiny_model, tmp_path, capsys):
    from synerdetect.cli import main

    ckpt = tiny_model.save_pretrained(tmp_path / "ckpt")
    out = tmp_path / "serve.jsonl"
    argv = ["bench", "serve", "--checkpoint", str(ckpt), "--clients", "4", "--requests", "12", "--bad-share", "0.34"]
    assert main([*argv, "--batch-size", "4", "--timeout", "300", "--out", str(out)]) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert capsys.readouterr().out.splitlines() == out.read_text().splitlines()
    by = {x["bench"]: x for x in lines}
    assert set(by) == {"serve_latency", "serve_throughput", "serve_errors", "serve_memory", "serve_correctness"}
    lat = by["serve_latency"]
    assert 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"]
    thr = by["serve_throughput"]
    assert thr["served_images"] == 8 and thr["served_images_per_s"] > 0 and thr["offline_images_per_s"] > 0
    # like with like: the ratio is rounded to 3 decimals from the unrounded rates, which are reported rounded to 2,
    # so it must lie within the quotient's range over the rates' rounding intervals (plus its own rounding)
    served, offline, half = thr["served_images_per_s"], thr["offline_images_per_s"], 0.005
    assert (served - half) / (offline + half) - 0.0005 <= thr["ratio"] <= (served + half) / (offline - half) + 0.0005
    assert thr["mean_batch_size"] >= 1 and thr["forward_passes"] >= 1
    err = by["serve_errors"]
    assert err["bad_requests"] == 4 and {k: v["n"] for k, v in err["by_kind"].items()} == {
        "truncated": 1,
        "bomb": 1,
        "not_an_image": 1,
        "empty": 1,
    }
    assert err["by_kind"]["bomb"]["statuses"] == {"422": 1} and err["by_kind"]["empty"]["statuses"] == {"400": 1}
    mem = by["serve_memory"]
    assert mem["rss_before_mb"] > 50 and mem["rss_after_mb"] > 50
    ok = by["serve_correctness"]
    assert ok["answered"] == 12 and ok["all_answered"] and ok["no_5xx"] and ok["bad_as_expected"]
    assert ok["logits_match_offline"] and ok["max_abs_dlogit"] < 1e-5 and ok["server_exit_code"] == 0
