"""Upload and download through the Hub's HTTP endpoints, against a stand-in on 127.0.0.1 (``tests/hub_server.py``).

Each step runs in a fresh process whose environment (HF_ENDPOINT, HF_TOKEN, HF_HUB_CACHE, HF_HUB_OFFLINE) the hub
client reads at start-up, as a user's shell would set it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from hub_server import FakeHub
from synerdetect.presets import get_preset

pytestmark = pytest.mark.slow


def _checkpoint(folder: Path) -> Path:
    """A checkpoint folder's files (torch-free): config, weights, a shipped base model, optimiser state."""
    (folder / "base" / "clip").mkdir(parents=True)
    (folder / "base" / "clip" / "config.json").write_text('{"tiny": true}')
    cfg = asdict(get_preset("tiny"))
    cfg["model"].update(clip="base/clip", sd="base/sd")
    (folder / "synerdetect_config.json").write_text(json.dumps({"format": "synerdetect/1", "config": cfg}))
    (folder / "trainable.safetensors").write_bytes(os.urandom(3000))
    (folder / "calibration.json").write_text('{"method": "temperature", "a": 2.0, "b": 0.0}')
    (folder / "optimizer.safetensors").write_bytes(os.urandom(500))  # not part of a published checkpoint
    return folder


def _run(code: str, **env: str) -> dict:
    full = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    full.update(env, PYTHONPATH=os.pathsep.join(sys.path), HF_HUB_DISABLE_PROGRESS_BARS="1")
    out = subprocess.run([sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_push_then_load_by_repo_id(tmp_path):
    ck = _checkpoint(tmp_path / "ck")
    cache = tmp_path / "cache"
    with FakeHub() as hub:
        online = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache)}
        code = (
            "import json\nfrom synerdetect.hub import resolve_checkpoint\n"
            "from synerdetect.push import push_checkpoint\n"
            f"r = push_checkpoint({str(ck)!r}, 'org/name', private=True, revision='v1')\n"
            "print(json.dumps({'url': r.url, 'card': r.card_written, 'files': r.files, "
            "'folder': str(resolve_checkpoint('org/name@v1'))}))"
        )
        got = _run(code, HF_TOKEN=hub.token, **online)
        # 1. what went up: the checkpoint's own files and the card it wrote, nothing else
        sent = hub.repos["org/name"].commits[hub.repos["org/name"].branches["v1"]]
        assert hub.repos["org/name"].private and got["card"] is True
        assert sorted(sent) == sorted(p for p, _ in got["files"]) == [
            "README.md", "base/clip/config.json", "calibration.json", "synerdetect_config.json",
            "trainable.safetensors",
        ]  # fmt: skip
        assert all(sent[p] == (ck / p).read_bytes() for p in sent)
        assert got["url"].endswith(hub.repos["org/name"].branches["v1"])
        # 2. what came down, into the cache of HF_HUB_CACHE: the same bytes
        folder = Path(got["folder"])
        assert folder.parent == cache / "models--org--name" / "snapshots"
        assert {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()} == sent
        assert (cache / "models--org--name" / "refs" / "v1").read_text() == folder.name
        # 3. a private repo without the token, a missing revision, a missing repo: one line naming the id
        errors = (
            "import json\nfrom synerdetect.hub import HubCheckpointError, resolve_checkpoint\nout = {}\n"
            "for spec in ('org/name@v1', 'org/name@nope', 'org/missing'):\n"
            "    try:\n        out[spec] = str(resolve_checkpoint(spec))\n"
            "    except HubCheckpointError as e:\n        out[spec] = 'error: ' + str(e)\n"
            "print(json.dumps(out))"
        )
        fresh = {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(tmp_path / "empty")}
        no_token = _run(errors, **fresh)
        assert no_token["org/name@v1"].startswith("error: org/name@v1: no such local folder, and no Hub repo")
        with_token = _run(errors, HF_TOKEN=hub.token, **fresh)
        assert with_token["org/name@v1"].startswith(str(tmp_path / "empty"))
        assert with_token["org/name@nope"] == "error: org/name@nope: the Hub repo org/name has no revision 'nope'"
        assert with_token["org/missing"].startswith("error: org/missing: no such local folder, and no Hub repo")
        # 4. a push with a wrong token: refused, one line
        bad = _run(
            "import json\nfrom synerdetect.hub import HubCheckpointError\n"
            "from synerdetect.push import push_checkpoint\n"
            f"try:\n    push_checkpoint({str(ck)!r}, 'org/other')\n    print(json.dumps('pushed'))\n"
            "except HubCheckpointError as e:\n    print(json.dumps(str(e)))",
            HF_TOKEN="wrong",
            **online,
        )
        assert bad.startswith("push to org/other failed:") and "\n" not in bad and "org/other" not in hub.repos
    # 5. the Hub gone: the cache answers offline; an uncached id fails at once with one line
    offline = _run(errors, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    assert offline["org/name@v1"] == str(folder)
    assert "HF_HUB_OFFLINE is set" in offline["org/missing"]


def test_an_unreachable_hub_fails_fast(tmp_path):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = (
        "import json, time\nfrom synerdetect.hub import HubCheckpointError, resolve_checkpoint\n"
        "t0 = time.perf_counter()\n"
        "try:\n    resolve_checkpoint('org/name')\nexcept HubCheckpointError as e:\n"
        "    print(json.dumps([str(e), time.perf_counter() - t0]))"
    )
    t0 = time.perf_counter()
    msg, seconds = _run(code, HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HUB_CACHE=str(tmp_path))
    assert msg.startswith("org/name: no such local folder; the Hub did not answer") and "\n" not in msg
    assert seconds < 30 and time.perf_counter() - t0 < 60
