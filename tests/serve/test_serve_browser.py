"""The web page at /, driven by a real headless Chromium (Selenium) against a uvicorn server on 127.0.0.1: upload
images through the file input and read the rendered verdicts. Screenshot: under pytest's tmp_path, and also at
$SYNERDETECT_SCREENSHOT when that is set.

Needs the Debian packages ``chromium`` and ``chromium-driver``; skipped with that reason when they are missing."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = pytest.mark.slow

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("httpx")
pytest.importorskip("selenium")
uvicorn = pytest.importorskip("uvicorn")

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture
def server(tiny_model):
    import httpx

    from synerdetect.engine.scoring import Scorer
    from synerdetect.serve import ServeSettings, create_app
    from synerdetect.serve.server import uvicorn_config

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny passes on a shared 2-core machine
    settings = ServeSettings(max_batch=8, max_wait_ms=20)
    app = create_app(Scorer(tiny_model, provenance=True), settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the configuration `synerdetect serve` runs (h11, header deadline, connection limit)
    srv = uvicorn.Server(uvicorn_config(app, settings, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not become ready"
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    try:
        yield base
    finally:
        srv.should_exit = True
        thread.join(30)
        torch.set_num_threads(before)


@pytest.fixture
def browser():
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip(
            "headless browser test needs the Debian packages chromium and chromium-driver "
            "(apt-get install -y chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,1500",
        "--force-device-scale-factor=1",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def _images(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    files = {}
    photo = folder / "photo.png"
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), "RGB").save(photo)
    files["photo.png"] = photo
    second = folder / "second.png"
    Image.fromarray(rng.integers(0, 256, (72, 100, 3), dtype=np.uint8), "RGB").save(second)
    files["second.png"] = second
    broken = folder / "broken.jpg"
    broken.write_bytes(b"this is not an image")
    files["broken.jpg"] = broken
    try:  # an image that declares AI generation in a C2PA manifest (untrusted signer): provenance evidence
        import c2pa  # noqa: F401

        from provenance_fixtures import jpeg_bytes, make_test_ca, sign_image

        signed = folder / "generated.jpg"
        signed.write_bytes(sign_image(jpeg_bytes(color=(200, 120, 40), size=(120, 90)), make_test_ca()))
        files["generated.jpg"] = signed
    except Exception:  # noqa: BLE001 - c2pa is optional for this test
        pass
    return files


def test_page_uploads_images_and_renders_verdicts(server, browser, tmp_path):
    import httpx
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    files = _images(tmp_path)
    browser.get(server + "/")
    assert browser.title.startswith("SynerDetect")
    WebDriverWait(browser, 30).until(lambda d: "device" in d.find_element(By.ID, "model-info").text)
    browser.find_element(By.ID, "file-input").send_keys("\n".join(str(p) for p in files.values()))

    def settled(d):
        cards = d.find_elements(By.CSS_SELECTOR, "#results .card")
        return len(cards) == len(files) and all(c.get_attribute("data-state") != "pending" for c in cards)

    WebDriverWait(browser, 60).until(settled)
    cards = {
        c.find_element(By.CSS_SELECTOR, ".name").text: c
        for c in browser.find_elements(By.CSS_SELECTOR, "#results .card")
    }
    assert set(cards) == set(files)

    # the page shows what the API says for the same file
    api = httpx.post(
        server + "/v1/detect", files=[("files", ("photo.png", files["photo.png"].read_bytes()))], timeout=60
    ).json()["results"][0]
    photo = cards["photo.png"]
    assert photo.get_attribute("data-state") == "done"
    verdict = photo.find_element(By.CSS_SELECTOR, ".verdict")
    assert verdict.get_attribute("data-verdict") == api["verdict"] and verdict.text.lower() == api["verdict"]
    assert photo.find_element(By.CSS_SELECTOR, ".prob-value").text == f"{100 * api['prob_fake']:.1f}%"
    assert photo.find_element(By.CSS_SELECTOR, ".logit").text == f"{api['logit']:+.4f}"
    assert "perceptual (CLIP)" in photo.text and "generative (SD inversion)" in photo.text
    # next to the verdict, the promise of the calibration: this server has none and says so
    assert "no certified calibration" in photo.find_element(By.CSS_SELECTOR, ".promise").text
    width = photo.find_element(By.CSS_SELECTOR, ".bar-fill").value_of_css_property("width")
    assert float(width.rstrip("px")) > 0 or api["prob_fake"] < 0.01

    # the evidence map: a toggle lays the API's overlay over the preview and takes it away again
    toggle = photo.find_element(By.CSS_SELECTOR, ".map-toggle")
    overlay = photo.find_element(By.CSS_SELECTOR, ".map-overlay")
    assert toggle.get_attribute("aria-pressed") == "false" and not overlay.is_displayed()
    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "true" and overlay.is_displayed()
    assert overlay.get_attribute("src").startswith("data:image/png;base64,")
    assert browser.execute_script("return arguments[0].naturalWidth", overlay) == 128  # native size of photo.png
    api_map = httpx.post(
        server + "/v1/detect?maps=true", files=[("files", ("photo.png", files["photo.png"].read_bytes()))], timeout=60
    ).json()["results"][0]["map"]
    assert (
        f"{100 * api_map['area_over_threshold']:.1f}% of the area"
        in photo.find_element(By.CSS_SELECTOR, ".map-info").text
    )
    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "false" and not overlay.is_displayed()

    broken = cards["broken.jpg"]
    assert broken.get_attribute("data-state") == "error"
    assert "not an image" in broken.find_element(By.CSS_SELECTOR, ".error-msg").text

    if "generated.jpg" in cards:
        gen = cards["generated.jpg"]
        assert gen.get_attribute("data-state") == "done"
        assert "declares AI generation" in gen.text and "C2PA manifest: valid, untrusted signer" in gen.text

    assert f"{len(files)} images processed (1 could not be scored)." in browser.find_element(By.ID, "status").text

    # both good images got their verdict, equal to the API's
    api_all = httpx.post(
        server + "/v1/detect",
        files=[("files", (n, files[n].read_bytes())) for n in ("photo.png", "second.png")],
        timeout=60,
    ).json()["results"]
    by_api = {r["name"]: r for r in api_all}
    for n in ("photo.png", "second.png"):
        v = cards[n].find_element(By.CSS_SELECTOR, ".verdict")
        assert (
            cards[n].get_attribute("data-state") == "done" and v.get_attribute("data-verdict") == by_api[n]["verdict"]
        )

    # table view: one row per image with the same values
    table = browser.find_element(By.ID, "results-table")
    assert not table.is_displayed()
    browser.find_element(By.ID, "view-table").click()
    assert table.is_displayed() and not browser.find_element(By.ID, "results").is_displayed()
    assert browser.find_element(By.ID, "view-table").get_attribute("aria-pressed") == "true"
    rows = {r.find_element(By.CSS_SELECTOR, ".name").text: r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr")}
    assert list(rows) == list(files)  # upload order
    for n in ("photo.png", "second.png"):
        assert rows[n].get_attribute("data-state") == "done"
        assert rows[n].find_element(By.CSS_SELECTOR, ".verdict").get_attribute("data-verdict") == by_api[n]["verdict"]
        assert rows[n].find_element(By.CSS_SELECTOR, ".logit").text == f"{by_api[n]['logit']:+.4f}"
    assert rows["broken.jpg"].get_attribute("data-state") == "error" and "not an image" in rows["broken.jpg"].text

    # downloads: client-side Blobs (captured here instead of saved)
    browser.execute_script(
        "window.__blobs = []; const make = URL.createObjectURL;"
        "URL.createObjectURL = (b) => { window.__blobs.push(b); return make.call(URL, b); };"
        "HTMLAnchorElement.prototype.click = function () {"
        "  window.__blobs[window.__blobs.length - 1].fname = this.download; };"
    )
    read_last = (
        "const done = arguments[0]; const b = window.__blobs[window.__blobs.length - 1];"
        "b.text().then((t) => done([b.fname, b.type, t]));"
    )
    browser.find_element(By.ID, "download-json").click()
    fname, mime, text = browser.execute_async_script(read_last)
    assert fname == "synerdetect-results.json" and mime == "application/json"
    doc = json.loads(text)["results"]
    assert [r["name"] for r in doc] == list(files)
    for r in doc:
        if r["name"] in by_api:
            assert abs(r["logit"] - by_api[r["name"]]["logit"]) < 1e-5 and r["verdict"] == by_api[r["name"]]["verdict"]
    browser.find_element(By.ID, "download-csv").click()
    fname, mime, text = browser.execute_async_script(read_last)
    assert fname == "synerdetect-results.csv" and mime.startswith("text/csv")
    csv_rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["name"] for r in csv_rows] == list(files)
    assert float(csv_rows[0]["logit"]) == pytest.approx(by_api["photo.png"]["logit"], abs=1e-5)
    assert csv_rows[2]["error_kind"] == "not_an_image"

    # keyboard: the drop zone is focusable and labelled; Enter and Space open the file picker
    zone = browser.find_element(By.ID, "drop-zone")
    assert zone.get_attribute("tabindex") == "0" and "Enter" in zone.get_attribute("aria-label")
    for bid in ("view-cards", "view-table", "download-csv", "download-json", "file-input"):
        assert browser.find_element(By.ID, bid).get_attribute("aria-label")
    browser.execute_script(
        "window.__picks = 0; document.getElementById('file-input').click = () => { window.__picks += 1; };"
    )
    zone.send_keys(Keys.ENTER)
    zone.send_keys(Keys.SPACE)
    assert browser.execute_script("return window.__picks") == 2
    assert browser.switch_to.active_element == zone
    browser.find_element(By.ID, "view-cards").click()  # the screenshot shows the cards
    shot = tmp_path / "serve_page.png"
    browser.execute_script("window.scrollTo(0, 0)")
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    extra = os.environ.get("SYNERDETECT_SCREENSHOT")
    if extra:
        Path(extra).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, extra)
    logs = browser.get_log("browser") if hasattr(browser, "get_log") else []
    assert not [e for e in logs if e.get("level") == "SEVERE" and "favicon" not in e.get("message", "")], logs


def test_openapi_page_renders_offline(server, browser):
    """/docs draws the API from the package's own Swagger UI files (no CDN): the operations appear in the page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(server + "/docs")
    WebDriverWait(browser, 30).until(ec.presence_of_element_located((By.CSS_SELECTOR, ".opblock-summary-path")))
    paths = {e.text.strip() for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/v1/detect", "/healthz", "/readyz", "/v1/model"} <= paths, paths
    requested = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert requested and all(u.startswith(server) for u in requested), requested
