"""Training: exact resume after a kill, 2-process CPU DDP (gloo), and the CLI end to end on tiny."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from synerdetect.engine.train import train
from synerdetect.presets import load_experiment

BENCH = {"test_families": ("gan_upsample", "diffusion_latent")}  # the conftest bench, two test families


def _cfg(bench, out, **extra):
    over = [
        f"data.train={bench / 'train'}",
        "data.train_layout=cnndetection",
        "data.image_size=64",
        "model.inversion_steps=2",
        "train.batch_size=4",
        "train.max_steps=6",
        "train.checkpoint_every=2",
        "train.log_every=1",
        f"train.output_dir={out}",
        "train.num_workers=0",
        "data.blur_prob=0.5",
        "data.jpeg_prob=0.5",
    ] + [f"{k}={v}" for k, v in extra.items()]
    return load_experiment(None, over, preset="tiny")


class Killed(Exception):
    pass


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_resume_after_kill_gives_the_same_weights(bench, tmp_path):
    ref = train(_cfg(bench, tmp_path / "a"), resume="never", progress=False)
    assert ref["global_step"] == 6

    def kill_at_5(step, _losses):
        if step == 5:
            raise Killed()

    with pytest.raises(Killed):
        train(_cfg(bench, tmp_path / "b"), resume="auto", progress=False, on_step=kill_at_5)
    assert (tmp_path / "b" / "checkpoints" / "step-00000004").is_dir()
    assert not (tmp_path / "b" / "final").exists()
    resumed = train(_cfg(bench, tmp_path / "b"), resume="auto", progress=False)
    assert resumed["global_step"] == 6
    a = load_file(str(tmp_path / "a" / "final" / "trainable.safetensors"))
    b = load_file(str(tmp_path / "b" / "final" / "trainable.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    # and the weights did change during training
    first = load_file(str(tmp_path / "b" / "checkpoints" / "step-00000004" / "trainable.safetensors"))
    assert any(not torch.equal(first[k], b[k]) for k in b)
    assert (tmp_path / "b" / "config.yaml").is_file() and (tmp_path / "b" / "train.log").is_file()
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["step"] == 6


def _run(args, env_extra=None, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env_extra or {}))
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)


def _ddp_launcher(port):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]


def _ddp_train(port, train_dir, out, *extra, max_steps, timeout=600):
    """Two CPU processes training tiny on ``train_dir`` into ``out`` (the command every DDP test launches)."""
    return _run(
        _ddp_launcher(port)
        + [
            "-m",
            "synerdetect.cli",
            "train",
            "--preset",
            "tiny",
            "--no-progress",
            f"data.train={train_dir}",
            "data.train_layout=cnndetection",
            "data.image_size=64",
            "model.inversion_steps=2",
            "train.batch_size=4",
            f"train.max_steps={max_steps}",
            f"train.output_dir={out}",
            "train.num_workers=0",
            *extra,
        ],
        timeout=timeout,
    )


@pytest.mark.slow
def test_two_process_cpu_ddp_trains_in_sync_and_evaluates_each_image_once(bench, tmp_path):
    out = tmp_path / "ddp"
    port = str(29500 + os.getpid() % 1000)
    r = _ddp_train(port, bench / "train", out, max_steps=3)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 3
    assert len(summary["replica_checksums"]) == 2 and len(set(summary["replica_checksums"])) == 1

    ev = tmp_path / "eval"
    r = _run(
        _ddp_launcher(port)
        + [
            "-m",
            "synerdetect.cli",
            "evaluate",
            "--checkpoint",
            str(out / "final"),
            "--data",
            str(bench / "test"),
            "--layout",
            "cnndetection",
            "--out",
            str(ev),
            "--no-progress",
            "--batch-size",
            "3",
            "--workers",
            "0",
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    paths = [json.loads(line)["path"] for line in (ev / "scores.jsonl").read_text().splitlines()]
    on_disk = sorted(str(p) for p in (bench / "test").rglob("*.png"))
    assert sorted(paths) == on_disk  # every image exactly once, no padded duplicates
    res = json.loads((ev / "results.json").read_text())
    assert res["n_images"] == len(on_disk)


@pytest.mark.slow
def test_cli_end_to_end(bench, tmp_path):
    from PIL import Image

    cli = [sys.executable, "-m", "synerdetect.cli"]
    out = tmp_path / "run"
    r = _run(
        cli
        + [
            "train",
            "--preset",
            "tiny",
            "--no-progress",
            f"data.train={bench / 'train'}",
            "data.image_size=64",
            "model.inversion_steps=2",
            "train.batch_size=4",
            "train.max_steps=2",
            f"train.output_dir={out}",
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = out / "final"
    # a folder laid out like a benchmark, with broken files among the good ones
    data = tmp_path / "data" / "test" / "mygen"
    for sub, src in (("0_real", "0_real"), ("1_fake", "1_fake")):
        (data / sub).mkdir(parents=True)
        for i, f in enumerate(sorted((bench / "test" / "gan_upsample" / src).glob("*.png"))[:3]):
            Image.open(f).save(data / sub / f"{i}.png")
    (data / "1_fake" / "broken.jpg").write_bytes(b"not an image at all")
    good = data / "0_real" / "0.png"
    (data / "0_real" / "truncated.png").write_bytes(good.read_bytes()[:100])

    r = _run(cli + ["data", "check", str(tmp_path / "data")])
    assert r.returncode == 0, r.stderr
    assert "broken.jpg" in r.stdout and "truncated.png" in r.stdout

    ev = tmp_path / "eval"
    r = _run(
        cli
        + [
            "evaluate",
            "--checkpoint",
            str(ckpt),
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(ev),
            "--no-progress",
            "--workers",
            "0",
            "--perturb",
            "jpeg:50",
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| mygen |" in r.stdout and "broken.jpg" in r.stdout
    res = json.loads((ev / "results.json").read_text())
    assert res["generators"]["mygen"]["n_real"] == 3 and res["generators"]["mygen"]["n_fake"] == 3
    assert {e["path"].split("/")[-1] for e in res["unreadable"]} == {"broken.jpg", "truncated.png"}
    assert "jpeg" in res["robustness"]["perturbations"]
    for f in ("results.csv", "scores.jsonl", "logit_distributions.png"):
        assert (ev / f).is_file()

    r = _run(
        cli
        + [
            "predict",
            str(data),
            "--checkpoint",
            str(ckpt),
            "--json",
            str(tmp_path / "p.json"),
            "--csv",
            str(tmp_path / "p.csv"),
            "--no-progress",
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    pred = json.loads((tmp_path / "p.json").read_text())
    assert len(pred["predictions"]) == 6 and len(pred["errors"]) == 2
    assert all(p["label"] in ("real", "fake") and 0 <= p["prob_fake"] <= 1 for p in pred["predictions"])
    assert "broken.jpg" in r.stderr
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 7

    r = _run(cli + ["predict", str(data / "1_fake" / "broken.jpg"), "--checkpoint", str(ckpt), "--no-progress"])
    assert r.returncode == 1 and "broken.jpg" in r.stderr


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_training_reads_from_the_feature_cache(bench, tmp_path):
    cfg = _cfg(
        bench,
        tmp_path / "c",
        **{"cache.policy": "cached-fixed", "train.max_steps": 4, "cache.dir": str(tmp_path / "cache")},
    )
    summary = train(cfg, resume="never", progress=False)
    assert summary["cache_hits"] == 4 and summary["cache_misses"] == 0
    assert any((tmp_path / "cache").rglob("*.safetensors"))
    # online: no cache is touched
    online = train(_cfg(bench, tmp_path / "o", **{"train.max_steps": 1}), resume="never", progress=False)
    assert "cache_hits" not in online and online["cache_policy"] == "online"


@pytest.mark.slow
def test_ddp_rank_losing_a_class_does_not_hang(bench, tmp_path):
    """Rank 0's first batch loses its only fake image to corruption while rank 1's batch is fine: both ranks
    must skip that step together (a lone skip would leave the other rank waiting in DDP's all-reduce)."""
    import shutil

    from synerdetect.data import BalancedBatchSampler, discover

    train_dir = tmp_path / "train"
    shutil.copytree(bench / "train", train_dir)
    samples = discover(train_dir, layout="cnndetection", split="train")
    sampler = BalancedBatchSampler([s.label for s in samples], 2, seed=0, num_replicas=2, rank=0)
    sampler.set_epoch(0)
    first = next(iter(sampler))
    victim = next(samples[i].path for i in first if samples[i].label == 1)
    Path(victim).write_bytes(b"corrupted")
    out = tmp_path / "ddp"
    port = str(30500 + os.getpid() % 1000)
    r = _ddp_train(port, train_dir, out, max_steps=2, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 2 and len(set(summary["replica_checksums"])) == 1
    assert "lost a class" in (out / "train.log").read_text()


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_periodic_validation_is_logged(bench, tmp_path):
    cfg = _cfg(
        bench,
        tmp_path / "v",
        **{
            "train.max_steps": 2,
            "train.val_every": 1,
            "data.val": str(bench / "test"),
            "data.val_layout": "cnndetection",
        },
    )
    summary = train(cfg, resume="never", progress=False)
    recs = [json.loads(line) for line in (tmp_path / "v" / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in recs if "val_acc" in r]
    assert [r["step"] for r in vals][:2] == [1, 2]
    n_test = len(list((bench / "test").rglob("*.png")))
    assert all(r["n"] == n_test and 0.0 <= r["val_acc"] <= 1.0 for r in vals)
    assert summary["val"]["n"] == n_test


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_bf16_mixed_precision_training_runs(bench, tmp_path):
    summary = train(
        _cfg(bench, tmp_path / "bf16", **{"train.max_steps": 2, "train.mixed_precision": "bf16"}),
        resume="never",
        progress=False,
    )
    assert summary["global_step"] == 2
    assert all(math.isfinite(v) for v in summary["last_losses"].values())


@pytest.mark.slow
def test_quick_demo_leaves_results_figure_and_checkpoint(tmp_path):
    from synerdetect.demo.run import run_demo
    from synerdetect.model.detector import SynerDetect

    assert run_demo(tmp_path / "demo", quick=True, progress=False) == 0
    res = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert set(res["generators"]) == {"gan_upsample", "gan_spectral", "diffusion_latent", "diffusion_noise"}
    assert res["seen_families"] == ["gan_upsample"]
    loc = res["localisation"]["per_generator"]["gan_upsample"]  # the maps measured against the composites' masks
    assert loc["n_images"] == 12 and 0.0 <= loc["combined"]["pixel_auc"] <= 1.0
    assert (tmp_path / "demo" / "logit_distributions.png").stat().st_size > 1000
    SynerDetect.from_pretrained(tmp_path / "demo" / "checkpoint")  # the checkpoint reloads on its own


@pytest.mark.slow
def test_two_process_ddp_training_builds_and_reads_the_cache(bench, tmp_path):
    out = tmp_path / "ddpc"
    port = str(31500 + os.getpid() % 1000)
    r = _ddp_train(
        port, bench / "train", out, "cache.policy=cached-refresh", "cache.refresh_every=1", max_steps=2, timeout=300
    )
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["cache_hits"] == 2 and summary["cache_misses"] == 0
    assert len(set(summary["replica_checksums"])) == 1
    keys = [d for d in (out / "feature_cache").iterdir() if d.is_dir()]
    assert [k.name for k in keys] == [summary["cache_key"]]  # one merged key folder, built by both ranks
