"""Checkpoints named by a Hugging Face Hub repo id, resolved from a cache laid out as the hub client lays it out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub_fixtures import make_hub_cache
from synerdetect.hub import (
    CHECKPOINT_PATTERNS,
    HubCheckpointError,
    hub_ref,
    is_repo_id,
    parse_repo_id,
    resolve_checkpoint,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache, offline: the hub client's own constants point at it (what HF_HUB_CACHE and
    HF_HUB_OFFLINE=1 set when the process starts; the subprocess test below sets the variables themselves)."""
    import huggingface_hub.constants as c

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    return cache


def test_parse_repo_id():
    assert parse_repo_id("org/name") == ("org/name", None)
    assert parse_repo_id("org/name@v1.0") == ("org/name", "v1.0")
    assert parse_repo_id("org/my.model-2@refs/pr/3") == ("org/my.model-2", "refs/pr/3")
    for not_an_id in ("runs/x/final", "./org/name", "/abs/name", "name", "../up", "org/", "org/name@"):
        assert parse_repo_id(not_an_id) is None, not_an_id


def test_the_patterns_name_the_checkpoint_files():
    from synerdetect.engine.calibration import CALIBRATION_NAME
    from synerdetect.model.base import CONFIG_NAME, WEIGHTS_NAME

    assert {CONFIG_NAME, WEIGHTS_NAME, CALIBRATION_NAME} <= set(CHECKPOINT_PATTERNS)


def test_resolves_from_the_cache_offline(ckpt, hub_cache):
    snap = make_hub_cache(hub_cache, "org/name", ckpt)
    other = make_hub_cache(hub_cache, "org/name", ckpt, revision="v1", commit="a" * 40)
    assert resolve_checkpoint("org/name") == snap
    assert resolve_checkpoint("org/name@v1") == other
    assert (snap / "synerdetect_config.json").read_bytes() == (ckpt / "synerdetect_config.json").read_bytes()


def test_adapt_takes_a_repo_id_even_as_a_path_and_says_a_published_checkpoint_has_no_replay(ckpt, hub_cache, tmp_path):
    from synerdetect.engine.adapt import AdaptError, adapt

    snap = make_hub_cache(hub_cache, "org/my-model", ckpt, commit="c0" * 20)
    assert hub_ref(snap) == "org/my-model@" + "c0" * 20 and hub_ref(ckpt) is None  # what lineage.json records
    assert is_repo_id(Path("org/my-model")) and resolve_checkpoint(Path("org/my-model")) == snap
    with pytest.raises(AdaptError) as e:  # the library call, with a Path, as the CLI does with the id
        adapt(Path("org/my-model"), tmp_path / "new", tmp_path / "out", replay_from_checkpoint=True, progress=False)
    msg = str(e.value)
    assert msg.startswith("org/my-model@c0c0") and "\n" not in msg
    assert "published (pushed) checkpoint never" in msg and "pass --replay OLD_DATA" in msg
    assert not (tmp_path / "out").exists()


def test_an_existing_local_folder_wins(ckpt, hub_cache, tmp_path, monkeypatch):
    make_hub_cache(hub_cache, "org/name", ckpt)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert not is_repo_id("org/name")
    assert resolve_checkpoint("org/name") == Path("org/name")


def test_a_missing_repo_is_one_line_naming_it(hub_cache, ckpt):
    with pytest.raises(HubCheckpointError) as e:
        resolve_checkpoint("org/missing@v2")
    msg = str(e.value)
    assert "\n" not in msg and "org/missing@v2" in msg and "HF_HUB_OFFLINE" in msg and "'v2'" in msg
    (ckpt.parent / "empty").mkdir(exist_ok=True)
    (ckpt.parent / "empty" / "notes.txt").write_text("hi")
    make_hub_cache(hub_cache, "org/empty", ckpt.parent / "empty")
    with pytest.raises(HubCheckpointError, match="no synerdetect_config.json"):
        resolve_checkpoint("org/empty")


@pytest.mark.usefixtures("hub_cache")
def test_cli_errors_are_one_line(capsys):
    from synerdetect.cli import main

    assert main(["predict", "x.jpg", "--checkpoint", "org/missing"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: org/missing:") and "\n" not in err
    assert main(["calibrate", "--checkpoint", "org/missing", "--data", "x"]) == 2
    assert "calibrate writes calibration.json" in capsys.readouterr().err


@pytest.mark.slow
def test_the_environment_variables_are_honoured(ckpt, tmp_path):
    """HF_HOME (the cache under HF_HOME/hub) and HF_HUB_OFFLINE, read by the hub client when the process starts."""
    home = tmp_path / "hf"
    snap = make_hub_cache(home / "hub", "org/name", ckpt)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(sys.path))
    code = (
        "import sys; from synerdetect.hub import resolve_checkpoint as r; print(r('org/name'), 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(snap), "False"]


@pytest.mark.slow
def test_predict_through_the_repo_id_equals_the_folder(ckpt, hub_cache, tmp_path):
    from PIL import Image

    from synerdetect.cli import main

    make_hub_cache(hub_cache, "org/name", ckpt)
    img = tmp_path / "a.png"
    Image.new("RGB", (40, 30), (200, 40, 90)).save(img)
    docs = []
    for spec in ("org/name", str(ckpt)):
        out = tmp_path / f"{len(docs)}.json"
        assert main(["predict", str(img), "--checkpoint", spec, "--json", str(out), "--no-progress"]) == 0
        docs.append(json.loads(out.read_text())["predictions"])
    strip = [[{k: v for k, v in r.items() if k != "timings"} for r in d] for d in docs]
    assert strip[0] == strip[1]
