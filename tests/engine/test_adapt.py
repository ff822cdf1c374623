"""``synerdetect adapt``: the adapted checkpoint loads and predicts, its lineage is right, only the trainable weights
move, replay batches hold the stated ratio, too little data is refused in one line, and a killed run resumes."""

import csv
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from synerdetect.data import Sample
from synerdetect.engine.adapt import AdaptError, AdaptOptions, _refit_calibration, adapt, split_new_data
from synerdetect.engine.calibration import Calibration
from synerdetect.engine.guarantees import GuaranteeError
from synerdetect.engine.replay import ReplayBatchSampler, pick_balanced, replay_split

BENCH = {"test_families": ("gan_upsample", "diffusion_latent")}


# ---------------------------------------------------------------------------------------------- fast
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_every_replay_batch_holds_the_stated_share_half_real_half_fake(ratio):
    labels = [0] * 10 + [1] * 10 + [0] * 6 + [1] * 6  # 20 new, then 12 replay
    is_replay = [False] * 20 + [True] * 12
    s = ReplayBatchSampler(labels, is_replay, 8, ratio, seed=3)
    want = round(8 * ratio / 2) * 2  # by hand: 2, 4, 6 of 8
    batches = list(s)
    assert len(batches) == len(s) == 10 // ((8 - want) // 2)
    for b in batches:
        rep = [i for i in b if is_replay[i]]
        new = [i for i in b if not is_replay[i]]
        assert len(b) == 8 and len(rep) == want
        for part in (rep, new):
            assert sum(labels[i] for i in part) * 2 == len(part)  # half fake
    # a pure function of (seed, epoch): a resumed run skipping 1 batch sees the same rest
    s2 = ReplayBatchSampler(labels, is_replay, 8, ratio, seed=3)
    s2.skip(1)
    assert list(s2) == batches[1:]
    s.set_epoch(1)
    assert list(s) != batches


def test_replay_split_rounds_to_pairs_and_keeps_new_images():
    assert replay_split(16, 0.5) == (8, 8)
    assert replay_split(16, 0.3) == (12, 4)  # 4.8 images -> the nearest even count, 4
    assert replay_split(4, 0.9) == (2, 2)
    with pytest.raises(ValueError, match="replay ratio"):
        replay_split(16, 1.0)


def test_pick_balanced_spreads_over_generators():
    samples = [Sample(f"{g}{i}-{c}", c, g) for g in ("a", "b") for c in (0, 1) for i in range(10)]
    picked = pick_balanced(samples, 8, seed=0)
    assert sorted((s.generator, s.label) for s in picked) == sorted([(g, c) for g in "ab" for c in (0, 1)] * 2)


def _samples(n_real, n_fake):
    return [Sample(f"r{i}", 0, "real") for i in range(n_real)] + [Sample(f"f{i}", 1, "new") for i in range(n_fake)]


def test_too_few_images_are_refused_with_how_many_are_needed():
    with pytest.raises(AdaptError, match=r"12 fake.*at least 8 of each"):
        split_new_data(_samples(0, 12), None, 0)
    with pytest.raises(AdaptError, match=r"5 real and 20 fake.*at least 8 of each"):
        split_new_data(_samples(5, 20), None, 0)
    train, val = split_new_data(_samples(40, 40), 16, 0)
    assert len(val) == 8 and len(train) == 24  # 16 of each class, a quarter (4) held out
    assert not {s.path for s in train} & {s.path for s in val}


def test_the_adapted_folder_leaves_out_what_describes_the_parent(tmp_path):
    from synerdetect.engine.adapt import _write_checkpoint

    parent, run = tmp_path / "parent", tmp_path / "run"
    kept = ["synerdetect_config.json", "base/clip/config.json", "replay/manifest.csv", "base/README.md"]
    dropped = ["README.md", ".synerdetect-demo", ".synerdetect-adapt", "calibration.json", "lineage.json",
               "optimizer.safetensors", "trainer_state.json"]  # fmt: skip
    for name in [*kept, *dropped, "trainable.safetensors"]:
        (parent / name).parent.mkdir(parents=True, exist_ok=True)
        (parent / name).write_text(f"parent {name}")
    (run / "adapted").mkdir(parents=True)
    (run / "adapted" / "trainable.safetensors").write_text("adapted")
    ckpt = _write_checkpoint(parent, tmp_path / "out" / "checkpoint", run)
    files = sorted(str(p.relative_to(ckpt)) for p in ckpt.rglob("*") if p.is_file())
    assert files == sorted([*kept, "trainable.safetensors"])
    assert all((ckpt / n).read_text() == f"parent {n}" for n in kept)  # nested README.md: not the card, kept
    assert (ckpt / "trainable.safetensors").read_text() == "adapted"


@pytest.mark.parametrize("n_real", [50, 10])
def test_the_parents_certificates_are_refitted_with_its_settings_or_their_refusal_recorded(
    tmp_path, monkeypatch, n_real
):
    """The calibration code is stubbed (it is tested in tests/engine): what is checked is what adapt asks of it and
    what it records. The parent: guarantee at 90 % / delta 0.1, FPR <= 5 % / delta 0.1 (45 reals needed)."""
    import synerdetect.engine.adapt as adapt_mod

    parent = tmp_path / "parent"
    parent.mkdir()
    Calibration(
        band=[-0.1, 0.1],
        target_accuracy=0.9,
        guarantee={"target": 0.9, "delta": 0.1, "found": True},
        max_fpr={"target": 0.05, "delta": 0.1, "threshold": 0.2},
    ).save(parent)
    calls = []

    def calibrate(*_args, guarantee, max_fpr, delta, **_kw):
        calls.append((guarantee, max_fpr, delta))
        if guarantee:
            raise GuaranteeError("no candidate band certifies 90% accuracy outside it")
        return Calibration(band=[-0.2, 0.2], max_fpr={"threshold": 0.3, "certified_fpr": 0.049})

    monkeypatch.setattr(adapt_mod, "calibrate_checkpoint", calibrate)
    new_val = [Sample(f"r{i}.png", 0, "new") for i in range(n_real)] + [Sample("f.png", 1, "new")]
    cfg = type("Cfg", (), {"data": type("Data", (), {"val": None})})()
    info = _refit_calibration(tmp_path / "ck", parent, cfg, None, new_val, tmp_path / "out", AdaptOptions(), False)
    g, f = info["certificates"]["guarantee"], info["certificates"]["max_fpr"]
    assert not g["carried_over"] and not f["carried_over"] and "changed the weights" in g["why"]
    assert not g["refitted"] and g["reason"] == "no candidate band certifies 90% accuracy outside it"
    if n_real == 50:  # enough reals: both asked with the parent's settings, then the FPR bound alone
        assert calls == [(True, 0.05, 0.1), (False, 0.05, 0.1)]
        assert f["refitted"] and (f["threshold"], f["certified_fpr"]) == (0.3, 0.049)
    else:  # refused before any scoring, with the count it needs
        assert calls == [(True, None, 0.1), (False, None, 0.05)]
        assert not f["refitted"] and "10 real image(s) cannot certify" in f["reason"] and "45 reals" in f["reason"]
    assert info["refitted"] is True  # the calibration itself was refitted without the refused certificates


@pytest.mark.slow  # imports the model libraries through the CLI: seconds on 2 cores
def test_cli_refusal_is_one_line(bench, tmp_path, capsys):
    from synerdetect.cli import main

    code = main(
        [
            "adapt",
            "--checkpoint",
            str(tmp_path / "ck"),
            "--data",
            str(bench / "test" / "gan_upsample"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert not (tmp_path / "o").exists()  # refused before anything is written
    assert err.startswith("error: the new data holds 4 real and 4 fake image(s); adapt needs at least 8 of each")


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def parent(bench, tmp_path_factory):
    """A tiny detector trained one step with a replay memory of 8 images."""
    from synerdetect.engine.train import train
    from synerdetect.presets import load_experiment

    out = tmp_path_factory.mktemp("parent")
    over = [
        f"data.train={bench / 'train'}",
        "data.train_layout=cnndetection",
        "data.image_size=64",
        "model.inversion_steps=2",
        "train.batch_size=4",
        "train.max_steps=1",
        f"train.output_dir={out}",
        "train.replay_memory=8",
        "data.blur_prob=0",
        "data.jpeg_prob=0",
    ]
    return Path(train(load_experiment(None, over, preset="tiny"), resume="never", progress=False)["final"])


@pytest.fixture(scope="module")
def new_data(tmp_path_factory):
    from synerdetect.demo import build_demo_benchmark

    root = tmp_path_factory.mktemp("new")
    fam = ("diffusion_latent",)
    build_demo_benchmark(root, size=64, n_train=8, n_test=1, train_families=fam, test_families=fam, seed=5)
    return root / "train"


def _options(bench, **kw):
    return AdaptOptions(**{"steps": 4, "val_every": 2, "patience": 9, "eval_sets": [str(bench / "test")], **kw})


@pytest.mark.slow
def test_adapted_checkpoint_lineage_frozen_weights_and_loading(bench, parent, new_data, tmp_path):
    from synerdetect.engine.scoring import Scorer
    from synerdetect.methods import load_detector

    # training wrote the replay memory: 4 real + 4 fake files copied byte for byte
    rows = list(csv.DictReader((parent / "replay" / "manifest.csv").open()))
    assert sorted(int(r["label"]) for r in rows) == [0] * 4 + [1] * 4
    assert all(Path(parent / "replay" / r["path"]).stat().st_size > 0 for r in rows)

    # the parent as calibrate --guarantee --max-fpr 0.05 --delta 0.1 leaves it (its numbers do not matter here)
    parent = Path(shutil.copytree(parent, tmp_path / "parent"))
    certs = {"guarantee": {"target": 0.9, "delta": 0.1, "found": True, "band": [-0.5, 0.5]},
             "max_fpr": {"target": 0.05, "delta": 0.1, "threshold": 0.2}}  # fmt: skip
    Calibration(band=[-0.1, 0.1], target_accuracy=0.9, fitted_on={"data": str(bench / "test")}, **certs).save(parent)
    out = tmp_path / "a"
    rep = adapt(parent, new_data, out, replay_from_checkpoint=True, options=_options(bench), progress=False)
    ckpt = out / "checkpoint"

    # lineage: the parent's weights hash recomputed here, the data counts, the steps, the table
    lin = json.loads((ckpt / "lineage.json").read_text())
    assert lin["parent"]["sha256"] == hashlib.sha256((parent / "trainable.safetensors").read_bytes()).hexdigest()
    on = lin["adapted_on"]
    assert (on["train"]["n_real"], on["train"]["n_fake"], on["validation"]["n_fake"]) == (4, 4, 4)
    assert (on["replay"]["n_real"], on["replay"]["n_fake"], on["replay"]["source"]) == (4, 4, "checkpoint")
    val_files = {r["path"] for r in csv.DictReader((out / "data" / "val.csv").open())}
    new_files = {str(p.resolve()) for p in new_data.rglob("*.png")}
    assert val_files < new_files and len(val_files) == 8

    def digest(paths):
        files = sorted(hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths)
        return hashlib.sha256("\n".join(files).encode()).hexdigest()

    assert on["validation"]["sha256"] == digest(val_files)
    assert on["train"]["sha256"] == digest(new_files - val_files)
    assert lin["steps"]["requested"] == 4 and lin["steps"]["done"] == 4
    assert lin["optim"]["batch"] == {"new": 2, "replay": 2}
    assert lin["cost"]["images_seen"] == 16 and lin["cost"]["replay_images_seen"] == 8
    fams = {r["family"]: r for r in lin["table"]}
    assert fams["diffusion_latent"]["role"] == "new" and fams["gan_upsample"]["role"] == "old"
    g = fams["gan_upsample"]
    assert g["forgetting"] == pytest.approx(g["acc_before"] - g["acc_after"])
    assert rep["families"] == lin["table"]
    assert json.loads((out / "adapt.json").read_text())["families"] == lin["table"]
    assert "| gan_upsample | old |" in (out / "adapt.md").read_text()
    # too few images to refit the calibration (20 per class): said so, and no stale calibration carried over;
    # the parent's certificates are recorded as not carried over, each with why it was not refitted
    assert lin["calibration"]["refitted"] is False and not (ckpt / "calibration.json").exists()
    got = lin["calibration"]["certificates"]
    assert {k: (c["target"], c["delta"], c["carried_over"], c["refitted"]) for k, c in got.items()} == {
        "guarantee": (0.9, 0.1, False, False),
        "max_fpr": (0.05, 0.1, False, False),
    }
    assert "at least 45 reals" in got["max_fpr"]["reason"]  # ceil(log 0.1 / log 0.95) = 45, zero false positives
    assert "calibration was not refitted" in got["guarantee"]["reason"]
    md = (out / "adapt.md").read_text()
    assert "Certificates of the parent: not carried over" in md and "at least 45 reals" in md

    # only the trainable weights differ from the parent's; everything else is bit-identical
    a, b = load_detector(parent), load_detector(ckpt)
    trainable = {n for n, p in a.named_parameters() if p.requires_grad}
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    frozen = [k for k in sa if k not in trainable]
    assert frozen and all(torch.equal(sa[k], sb[k]) for k in frozen)
    # the kept weights are the best validation step's: the parent's own when no step beat it, else out/best's
    best = lin["steps"]["best_step"]
    hist = json.loads((out / "early_stopping.json").read_text())["history"]
    assert best == max(hist, key=lambda h: (h["val_acc"], h["val_ap"], -h["step"]))["step"]
    moved = [k for k in trainable if not torch.equal(sa[k], sb[k])]
    tb = load_file(str(ckpt / "trainable.safetensors"))
    assert set(tb) == trainable
    if best == 0:
        assert not moved
    else:
        assert moved
        kept = load_file(str(out / "best" / "trainable.safetensors"))
        assert all(torch.equal(tb[k], kept[k]) for k in tb)

    # it loads and predicts like any checkpoint
    img = str(next((bench / "test" / "gan_upsample" / "1_fake").iterdir()))
    rec = Scorer.from_checkpoint(ckpt, device="cpu").score(img)[0]
    assert rec["label"] in ("real", "fake") and np.isfinite(rec["logit"])
    # ... and through every other path a user takes: the one-line API, predict, evaluate and the model card
    import synerdetect
    from synerdetect.cli import main

    assert synerdetect.load(str(ckpt), device="cpu")([img])[0]["logit"] == pytest.approx(rec["logit"], abs=1e-5)
    assert main(["predict", img, "--checkpoint", str(ckpt), "--json", str(tmp_path / "p.json"), "--no-progress"]) == 0
    pred = json.loads((tmp_path / "p.json").read_text())["predictions"][0]
    assert pred["logit"] == pytest.approx(rec["logit"], abs=1e-5)
    ev = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(ckpt), "--data", str(bench / "test"), "--out", str(ev), "--no-progress"]
    assert main([*argv, "--workers", "0"]) == 0
    assert json.loads((ev / "results.json").read_text())["n_images"] > 0
    assert main(["card", str(ckpt)]) == 0
    lineage = json.loads((ckpt / "lineage.json").read_text())
    card = (ckpt / "README.md").read_text()
    assert "## Lineage" in card and lineage["parent"]["sha256"] in card  # the card shows where it came from


class Killed(Exception):
    pass


@pytest.mark.slow
def test_killed_adapt_resumes_to_the_same_weights(bench, parent, new_data, tmp_path, monkeypatch):
    import synerdetect.engine.train as train_mod

    opts = _options(bench, eval_sets=[], refit_calibration=False)
    adapt(parent, new_data, tmp_path / "ref", replay=bench / "train", options=opts, progress=False)

    real_step = train_mod._optimizer_step

    def dies_at_step_3(*args, **kw):
        if args[9] == 3:  # the 0-based step: after the checkpoint at step 2
            raise Killed()
        return real_step(*args, **kw)

    monkeypatch.setattr(train_mod, "_optimizer_step", dies_at_step_3)
    with pytest.raises(Killed):
        adapt(parent, new_data, tmp_path / "b", replay=bench / "train", options=opts, progress=False)
    assert (tmp_path / "b" / "run" / "checkpoints" / "step-00000002").is_dir()
    assert not (tmp_path / "b" / "checkpoint").exists()
    monkeypatch.setattr(train_mod, "_optimizer_step", real_step)
    adapt(parent, new_data, tmp_path / "b", replay=bench / "train", options=opts, progress=False)
    a = load_file(str(tmp_path / "ref" / "run" / "final" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "final" / "trainable.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    ha = json.loads((tmp_path / "ref" / "early_stopping.json").read_text())["history"]
    hb = json.loads((tmp_path / "b" / "early_stopping.json").read_text())["history"]
    assert [h["step"] for h in ha] == [h["step"] for h in hb] == [0, 2, 4]
