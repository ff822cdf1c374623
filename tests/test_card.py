"""``synerdetect card`` and ``synerdetect push --dry-run``: the card's numbers are the files' numbers."""

from __future__ import annotations

import json
import re
from dataclasses import asdict

import numpy as np
import pytest
import yaml

from synerdetect.card import CARD_MARKER, write_card
from synerdetect.cli import main
from synerdetect.presets import get_preset

GENS = ("gan_a", "diff_b", "diff_c")


def _summary(rng: np.random.Generator) -> dict:
    gens = {
        g: {"acc": float(rng.uniform()), "real_acc": float(rng.uniform()), "fake_acc": float(rng.uniform()),
            "ap": float(rng.uniform()), "n_real": int(rng.integers(5, 99)), "n_fake": int(rng.integers(5, 99)),
            "formats": {"real": {"JPEG": 3}, "fake": {"PNG": 4}}}
        for g in GENS
    }  # fmt: skip
    mean = {k: float(np.mean([m[k] for m in gens.values()])) for k in ("acc", "real_acc", "fake_acc", "ap")}
    return {"generators": gens, "mean": mean}


@pytest.fixture
def checkpoint(tmp_path):
    """A checkpoint folder's files (config, calibration with a guarantee and an FPR bound, lineage, optimiser state)
    and an evaluate folder with raw, harmonized and robustness results, all with random numbers."""
    rng = np.random.default_rng(0)
    ck = tmp_path / "ck"
    (ck / "base" / "clip").mkdir(parents=True)
    (ck / "base" / "clip" / "config.json").write_text("{}")
    cfg = asdict(get_preset("tiny"))
    cfg["model"].update(clip="base/clip", sd="laion/some-sd")
    (ck / "synerdetect_config.json").write_text(json.dumps({"format": "synerdetect/1", "config": cfg, "extra": {}}))
    (ck / "trainable.safetensors").write_bytes(b"\0" * 1234)
    (ck / "optimizer.safetensors").write_bytes(b"\0" * 99)
    cal = {"method": "platt", "band": [-0.25, 0.5], "target_accuracy": 0.95, "fitted_on": {"data": "v"},
           "metrics": {"ece_before": 0.2, "ece_after": 0.05, "coverage": 0.9, "selective_accuracy": 0.97},
           "guarantee": {"method": "clopper-pearson", "delta": 0.05, "n": 321, "bound": 0.0412},
           "max_fpr": {"target": 0.01, "threshold": 1.75, "certified_fpr": 0.0093}}  # fmt: skip
    (ck / "calibration.json").write_text(json.dumps(cal))
    lineage = {"parent": "sha256:abc", "steps": 40, "table": [{"set": "old", "acc": 0.8}, {"set": "new", "acc": 0.9}]}
    (ck / "lineage.json").write_text(json.dumps(lineage))
    ev = tmp_path / "eval_x"
    ev.mkdir()
    res = _summary(rng)
    res["harmonized"] = {**_summary(rng), "harmonize": {"spec": "jpeg:96"}}
    res["robustness"] = {
        "perturbations": {
            "jpeg": {"levels": {"q60": {"acc": 0.61, "ap": 0.72, "n_images": 30}}, "mAcc": 0.61, "mAP": 0.72}
        }
    }
    (ev / "results.json").write_text(json.dumps(res))
    return ck, ev, res, cal, lineage


def _tables(md: str) -> list[list[dict[str, str]]]:
    """Every markdown table of ``md``, as rows of {header: cell}."""
    tables, cur = [], None
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cur is None:
                cur = {"header": cells, "rows": []}
            elif not set("".join(cells)) <= set("-:"):
                cur["rows"].append(dict(zip(cur["header"], cells)))
        elif cur is not None:
            tables.append(cur["rows"])
            cur = None
    if cur is not None:
        tables.append(cur["rows"])
    return tables


def _check_table(rows: list[dict[str, str]], summary: dict) -> None:
    assert [r["generator"] for r in rows] == [*GENS, "**mean**"]
    for r in rows:
        m = summary["mean"] if r["generator"] == "**mean**" else summary["generators"][r["generator"]]
        for col, key in (("acc", "acc"), ("real acc", "real_acc"), ("fake acc", "fake_acc"), ("AP", "ap")):
            assert float(r[col]) == pytest.approx(100 * m[key], abs=0.005), (r["generator"], col)
        if r["generator"] != "**mean**":
            assert (int(r["#real"]), int(r["#fake"])) == (m["n_real"], m["n_fake"])


def test_the_card_tables_are_the_results(checkpoint):
    ck, ev, res, cal, lineage = checkpoint
    path = write_card(ck, [ev], repo_id="org/name")
    text = path.read_text()
    front, body = re.match(r"---\n(.*?)\n---\n(.*)", text, re.S).groups()  # type: ignore[union-attr]
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "synerdetect" and meta["pipeline_tag"] == "image-classification"
    assert meta["base_model"] == ["laion/some-sd"]  # base/clip is a shipped tiny model, not a Hub id
    assert meta["license"] == "apache-2.0" and "synerdetect" in meta["tags"]
    index = {
        (r["dataset"]["split"], m["type"]): m["value"] for r in meta["model-index"][0]["results"] for m in r["metrics"]
    }
    assert index == {
        (g, t): round(100 * res["generators"][g][k], 2)
        for g in GENS
        for k, t in (("acc", "accuracy"), ("ap", "average_precision"))
    }
    tables = _tables(body)
    gen_tables = [t for t in tables if t and "generator" in t[0]]
    assert len(gen_tables) == 2
    _check_table(gen_tables[0], res)  # raw
    _check_table(gen_tables[1], res["harmonized"])
    rob = next(t for t in tables if t and "perturbation" in t[0])
    assert rob[0] == {"perturbation": "jpeg", "level": "q60", "acc": "61.00", "AP": "72.00", "#images": "30"}
    lin = next(t for t in tables if t and "set" in t[0])
    assert lin == [{"set": "old", "acc": "0.8"}, {"set": "new", "acc": "0.9"}]
    for key, val in {**cal["guarantee"], **cal["max_fpr"]}.items():
        assert f"- {key}: {val}" in body
    assert "- parent: sha256:abc" in body and "- steps: 40" in body
    assert 'synerdetect.load("org/name")' in body and CARD_MARKER in body
    changes = next(t for t in tables if t and "setting" in t[0])
    assert {"setting": "model.inversion_steps", "paper": "100", "this checkpoint": "10"} in changes


def test_card_keeps_a_readme_it_did_not_write(checkpoint, capsys):
    ck, ev, *_ = checkpoint
    (ck / "README.md").write_text("# my notes\n")
    assert main(["card", str(ck), "--results", str(ev)]) == 2
    assert "not written by `synerdetect card`" in capsys.readouterr().err
    assert (ck / "README.md").read_text() == "# my notes\n"
    assert main(["card", str(ck), "--force"]) == 0
    assert main(["card", str(ck)]) == 0  # its own card is rewritten
    assert "No `results.json` was given" in (ck / "README.md").read_text()


def test_push_dry_run_lists_the_checkpoint_files_and_sends_nothing(checkpoint, capsys, monkeypatch):
    ck, *_ = checkpoint

    def no_network(*_a, **_k):
        raise AssertionError("a dry run made a request")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", no_network)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", no_network)
    before = sorted(p.name for p in ck.rglob("*"))
    assert main(["push", str(ck), "org/name", "--dry-run"]) == 0
    out = capsys.readouterr().out
    listed = dict(re.findall(r"^(\S+(?: \(the model card, written first\))?)\s+(\d+(?:\.\d)? k?B|-)$", out, re.M))
    assert set(listed) == {
        "base/clip/config.json", "calibration.json", "lineage.json", "synerdetect_config.json",
        "trainable.safetensors", "README.md (the model card, written first)",
    }  # fmt: skip
    assert "not uploaded (not part of a published checkpoint): optimizer.safetensors" in out
    assert listed["trainable.safetensors"] == "1.2 kB" and listed["base/clip/config.json"] == "2 B"
    assert "nothing uploaded" in out and sorted(p.name for p in ck.rglob("*")) == before


def test_push_refuses_a_bad_repo_id(checkpoint, capsys):
    ck, *_ = checkpoint
    assert main(["push", str(ck), "not a repo", "--dry-run"]) == 2
    assert "not a Hub repo id" in capsys.readouterr().err


@pytest.mark.slow  # two subprocesses
def test_card_and_push_dry_run_do_not_import_torch(checkpoint):
    import subprocess
    import sys

    ck, ev, *_ = checkpoint
    code = "import sys\nfrom synerdetect.cli import main\nrc = main(sys.argv[1:])\n"
    code += "print('TORCH', 'torch' in sys.modules, rc)"
    for argv in (["card", str(ck), "--results", str(ev)], ["push", str(ck), "org/name", "--dry-run"]):
        r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        assert "TORCH False 0" in r.stdout, (argv, r.stderr[-1500:])
