"""Benchmark runs end to end on the tiny preset and reports every documented measurement (timings are not
asserted: only that the values and ratios are computed)."""

import json
import math

import pytest

EXPECTED = {
    "component_clip_vision",
    "component_clip_vision_noise",
    "component_text_tower",
    "component_unet_step",
    "component_vae_encode",
    "component_vae_decode",
    "roofline_predict_s_per_img",
    "predict_s_per_img",
    "predict_throughput",
    "predict_vs_roofline",
    "inversion_throughput",
    "train_step_throughput",
    "cache_build_s_per_img",
    "epoch_train_online_s",
    "epoch_train_cached_s",
    "epoch_train_cached_latents_only_s",
    "cached_epoch_speedup",
    "cached_epoch_speedup_latents_only",
    "cached_eval_epoch_speedup",
    "cached_eval_epoch_speedup_latents_only",
    "cache_build_s_per_img_3steps",
    "cached_epoch_speedup_3steps",
    "cached_epoch_speedup_3steps_latents_only",
    "cached_eval_epoch_speedup_3steps",
    "cached_eval_epoch_speedup_3steps_latents_only",
    "sharded_build_seconds_1proc",
    "sharded_build_seconds_2proc",
    "sharded_build_speedup",
    "tiles_per_image",
    "predict_center_1024_s_per_img",
    "predict_tiles_1024_s_per_img",
    "tiles_vs_center_predict",
    "tiles_transform_vs_center",
}
FIELDS = {"name", "value", "unit", "device", "preset", "steps", "resolution", "dtype", "torch", "date"}


@pytest.mark.slow
def test_run_bench_tiny(tmp_path, capsys):
    from synerdetect.bench import run_bench

    out = tmp_path / "bench.jsonl"
    lines = run_bench(
        "tiny",
        "cpu",
        steps=2,
        batch_size=4,
        repeats=1,
        warmup=1,
        epoch_images=8,
        long_steps=3,
        shard_images=8,
        out=out,
        threads=1,
    )
    names = [r["name"] for r in lines]
    assert EXPECTED <= set(names), EXPECTED - set(names)
    assert len(names) == len(set(names))
    for r in lines:
        assert FIELDS <= set(r), r
        assert math.isfinite(r["value"]) and r["value"] > 0, r
        assert r["device"] == "cpu" and r["preset"] == "tiny"
    by = {r["name"]: r for r in lines}
    assert by["cached_epoch_speedup"]["steps"] == 2 and by["cached_epoch_speedup_3steps"]["steps"] == 3
    assert by["cached_epoch_speedup_3steps_latents_only"]["steps"] == 3
    assert by["predict_vs_roofline"]["unit"] == "ratio"
    # 1024 px at 64 px tiles: 21 x 21 uncapped, cap 36 -> sqrt(36 / 441) x 21 = 6 per axis (data/tiles.py)
    assert by["tiles_per_image"]["value"] == 36 and by["tiles_vs_center_predict"]["unit"] == "ratio"
    # Printed as JSON lines and written to --out.
    printed = [json.loads(s) for s in capsys.readouterr().out.splitlines() if s.startswith("{")]
    assert [p["name"] for p in printed] == names
    assert [json.loads(s)["name"] for s in out.read_text().splitlines()] == names


def test_bench_rejects_unknown_preset():
    from synerdetect.bench import run_bench
    from synerdetect.config import ConfigError

    with pytest.raises(ConfigError):
        run_bench("huge", "cpu")
