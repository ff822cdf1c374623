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


def _real_calibration(rng: np.random.Generator, fitted_on: dict) -> dict:
    """calibration.json as ``calibrate --guarantee --max-fpr 0.01`` writes it: fit_calibration, then the certified
    band and FPR threshold of engine/guarantees.py, on synthetic validation logits (|logit| <= 4)."""
    from synerdetect.engine.calibration import fit_calibration
    from synerdetect.engine.guarantees import attach_guarantee, attach_max_fpr

    labels = np.repeat([0, 1], 400)
    logits = np.clip(np.where(labels == 1, 1.0, -1.0) + rng.normal(0, 0.7, labels.size), -4, 4)
    cal = fit_calibration(logits, labels, method="platt", target_accuracy=0.95)
    attach_guarantee(cal, logits, labels, target=0.95, delta=0.05)
    attach_max_fpr(cal, logits, labels, target_fpr=0.01, delta=0.05)
    cal.fitted_on = fitted_on
    return cal.to_dict()


def _real_lineage(tmp_path, rng: np.random.Generator) -> dict:
    """lineage.json as adapt writes it (engine/lineage.build_lineage), small files standing for the images."""
    from synerdetect.data import Sample
    from synerdetect.engine.lineage import build_lineage, family_rows

    parent = tmp_path / "runs" / "parent_run" / "final"
    parent.mkdir(parents=True)
    (parent / "trainable.safetensors").write_bytes(rng.bytes(300))
    new = tmp_path / "data" / "new_set"

    def samples(kind: str, n: int, gen: str) -> list[Sample]:
        out = []
        for i in range(2 * n):
            f = new / kind / f"{i}.png"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(rng.bytes(40))
            out.append(Sample(str(f), i % 2, gen))
        return out

    def ev(gens: tuple[str, ...]) -> dict:
        return {"generators": {g: {"acc": float(rng.uniform()), "ap": float(rng.uniform()), "n_real": 8,
                                   "n_fake": 8} for g in gens}}  # fmt: skip

    rows = family_rows(ev(("old_gan", "new_diff")), ev(("old_gan", "new_diff")), ["new_diff"])
    return build_lineage(
        parent=parent,
        data=new,
        new_train=samples("train", 6, "new_diff"),
        new_val=samples("val", 4, "new_diff"),
        memory=samples("replay", 4, "old_gan"),
        replay_source="checkpoint",
        steps={"steps_done": 15, "best_step": 10, "stopped_early": True},
        requested_steps=20,
        val_every=5,
        patience=1,
        lr=3e-3,
        seed=7,
        ratio=0.5,
        batch=(16, 16),
        calibration={"refitted": False, "reason": "too few images"},
        cost={"wall_seconds": 12.5, "train_seconds": 10.25, "steps": 15},
        table=rows,
    )


@pytest.fixture
def checkpoint(tmp_path):
    """A checkpoint folder's files (config, a real calibration with a certified band and FPR threshold, a real
    lineage, optimiser state; the local paths in them absolute, as the commands write them) and an evaluate folder
    with raw, harmonized and robustness results, all with random numbers."""
    rng = np.random.default_rng(0)
    ck = tmp_path / "ck"
    (ck / "base" / "clip").mkdir(parents=True)
    (ck / "base" / "clip" / "config.json").write_text("{}")
    cfg = asdict(get_preset("tiny"))
    cfg["model"].update(clip="base/clip", sd="laion/some-sd")
    cfg["data"].update(train=str(tmp_path / "data" / "train_set"))
    (ck / "synerdetect_config.json").write_text(json.dumps({"format": "synerdetect/1", "config": cfg, "extra": {}}))
    (ck / "trainable.safetensors").write_bytes(b"\0" * 1234)
    (ck / "optimizer.safetensors").write_bytes(b"\0" * 99)
    cal = _real_calibration(rng, {"data": str(tmp_path / "data" / "val_set"), "n_real": 400, "n_fake": 400})
    (ck / "calibration.json").write_text(json.dumps(cal))
    lineage = _real_lineage(tmp_path, rng)
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


def _between(md: str, start: str, end: str) -> str:
    i = md.index(start)
    j = md.find(end, i + len(start))
    return md[i : j if j >= 0 else len(md)]


def _parse_items(md: str) -> dict:
    """The ``- key: value`` lines of ``md`` (nested by indentation, as the card writes a JSON object) back into a
    dict of the shown strings."""
    root: dict = {}
    stack: list[tuple[int, dict]] = [(-1, root)]
    for line in md.splitlines():
        m = re.match(r"^( *)- ([^:\s]+):(?: (.*))?$", line)
        if m is None:
            continue
        while stack[-1][0] >= len(m[1]):
            stack.pop()
        if m[3] is None:
            stack[-1][1][m[2]] = {}
            stack.append((len(m[1]), stack[-1][1][m[2]]))
        else:
            stack[-1][1][m[2]] = m[3]
    return root


def _same(shown: str, value) -> bool:
    """Whether the card's text ``shown`` is the JSON ``value`` (numbers to 6 significant digits, an absolute local
    path as its last component)."""
    if value is None:
        return shown == "`null`"
    if isinstance(value, bool):
        return shown == str(value)
    if isinstance(value, int | float):
        return float(shown) == pytest.approx(value, rel=1e-5, abs=1e-9)
    if isinstance(value, list):
        parts = shown.strip("[]").split(", ")
        return len(parts) == len(value) and all(_same(p, v) for p, v in zip(parts, value, strict=True))
    return shown == (value.rsplit("/", 1)[-1] if value.startswith("/") else value)


def _check_shown(shown: dict, doc: dict, where: str = "") -> None:
    for k, v in doc.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            continue  # a table, checked on its own
        assert k in shown, f"{where}{k} not in the card"
        if isinstance(v, dict):
            _check_shown(shown[k], v, f"{where}{k}.")
        else:
            assert _same(shown[k], v), (f"{where}{k}", shown[k], v)


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
    # the certified band and FPR threshold, and the lineage, read back from the card's text
    guarantee = _between(body, "**Guarantee**", "**False-positive-rate bound**")
    _check_shown(_parse_items(guarantee), cal["guarantee"])
    _check_shown(_parse_items(_between(body, "**False-positive-rate bound**", "\n## ")), cal["max_fpr"])
    assert cal["guarantee"]["found"] and cal["max_fpr"]["n_real"] == 400  # real certificates, not empty ones
    lin_md = _between(body, "## Lineage (fine-tuning)", "\n## ")
    _check_shown(_parse_items(lin_md), lineage)
    lin_rows = next(t for t in _tables(lin_md) if t and "family" in t[0])
    assert [r["family"] for r in lin_rows] == [r["family"] for r in lineage["table"]] == ["new_diff", "old_gan"]
    for shown, row in zip(lin_rows, lineage["table"], strict=True):
        assert all(_same(shown[k], v) for k, v in row.items()), (shown, row)
    # no local path is published: folders by their base name
    assert str(ck.parent) not in text and "/runs/" not in text
    assert _parse_items(lin_md)["parent"]["path"] == "final"  # lineage: /tmp/.../runs/parent_run/final
    assert _parse_items(lin_md)["adapted_on"]["source"] == "new_set"
    assert "- fitted on: `val_set`" in body and "- training data: `train_set`" in body
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


def test_published_paths_are_base_names_and_repo_ids_stay_whole():
    from synerdetect.utils import public_paths

    doc = {"p": "/home/ann/data/val/", "w": "C:\\Users\\ann\\val_b", "r": "org/name@0123abc", "n": 3, "s": ["~/x/y"]}
    assert public_paths(doc) == {"p": "val", "w": "val_b", "r": "org/name@0123abc", "n": 3, "s": ["y"]}
