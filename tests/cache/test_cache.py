"""Feature cache: keys, atomic writes, corruption, resume, exactness, and a real 2-process sharded build."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from synerdetect import SynerDetect
from synerdetect.cache import (
    CachedBatch,
    CachedFeatures,
    FeatureCache,
    build_cache,
    compute_noise_pixels,
    content_hash,
    feature_key,
    policy_wants_cache,
)
from synerdetect.data.transforms import EvalTransform

STEPS = 3
pytestmark = pytest.mark.usefixtures("one_thread")


def write_images(folder: Path, n: int = 12, seed: int = 0) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        arr = rng.integers(0, 256, (64, 72 + 4 * (i % 3), 3), dtype=np.uint8)  # distinct, some need a crop
        p = folder / f"img_{i:02d}.png"
        Image.fromarray(arr).save(p)
        paths.append(str(p))
    return paths


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_images(tmp_path_factory.mktemp("imgs"))


def eval_batch(paths, size=64):
    from synerdetect.data.imageio import load_image

    t = EvalTransform(size)
    return torch.stack([t(load_image(p)) for p in paths])


def shard_files(root: Path, key: str) -> list[Path]:
    d = root / key / "shards"
    return sorted(d.glob("*.safetensors")) if d.is_dir() else []


# ---------------------------------------------------------------- keys
def test_content_hash_is_sha256_of_bytes(tmp_path):
    import hashlib

    p = tmp_path / "f.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # several chunks
    p.write_bytes(data)
    assert content_hash(p) == hashlib.sha256(data).hexdigest()


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_key_changes_with_what_changes_the_result(model):
    k0, info = feature_key(model, image_size=64)
    assert feature_key(model, image_size=64)[0] == k0  # deterministic
    assert info["inversion_steps"] == STEPS and info["dtype"] == "float32"
    assert json.dumps(info, default=str)  # readable, serialisable
    # inversion steps
    assert feature_key(SynerDetect.from_preset("tiny", **{"model.inversion_steps": 2}), image_size=64)[0] != k0
    # compute dtype
    bf = SynerDetect.from_preset("tiny", **{"model.inversion_steps": STEPS, "model.dtype": "bfloat16"})
    assert feature_key(bf, image_size=64)[0] != k0
    # loader resolution
    assert feature_key(model, image_size=72)[0] != k0
    # trainable weights that shape the prompt (E_v LoRA, tuner, projector) ...
    other = SynerDetect.from_preset("tiny", **{"model.inversion_steps": STEPS})
    assert feature_key(other, image_size=64)[0] == k0  # same seeds, same weights
    with torch.no_grad():
        other.tuner.ctx.add_(1e-3)
    assert feature_key(other, image_size=64)[0] != k0
    with torch.no_grad():
        other.tuner.ctx.sub_(1e-3)
        other.cond_proj.weight.mul_(1.01)
    assert feature_key(other, image_size=64)[0] != k0
    # ... but not E_d's LoRA, which acts after the inversion
    other2 = SynerDetect.from_preset("tiny", **{"model.inversion_steps": STEPS})
    with torch.no_grad():
        for n, p in other2.E_d.named_parameters():
            if "lora_B" in n:
                p.add_(0.1)
    assert feature_key(other2, image_size=64)[0] == k0
    # frozen SD weights
    other3 = SynerDetect.from_preset("tiny", **{"model.inversion_steps": STEPS, "model.tiny_seed": 1})
    assert feature_key(other3, image_size=64)[0] != k0
    # whether (and how) the E_d input is stored
    assert info["noise_pixels"]["stored"] is True and info["noise_pixels"]["dtype"] == "float16"
    assert info["noise_pixels"]["shape"] == [3, 64, 64]
    k_lat, info_lat = feature_key(model, image_size=64, store_noise_pixels=False)
    assert k_lat != k0 and info_lat["noise_pixels"] == {"stored": False}
    # with a trainable noise adapter E_d's input is never cached (it depends on trained weights)
    ad = SynerDetect.from_preset("tiny", **{"model.inversion_steps": STEPS, "model.noise_encoder_input": "adapter"})
    assert feature_key(ad, image_size=64)[1]["noise_pixels"] == {"stored": False}
    assert feature_key(ad, image_size=64)[0] == feature_key(ad, image_size=64, store_noise_pixels=False)[0]


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_hit_and_miss_by_key(model, images, tmp_path):
    root = tmp_path / "cache"
    st = build_cache(model, images[:4], root, image_size=64, batch_size=4, progress=False)
    assert st["n_computed"] == 4 and st["n_indexed"] == 4
    assert CachedFeatures(root, model, 64).lookup(images[:4]) is not None
    assert CachedFeatures(root, model, 64).lookup(images[:5]) is None  # one item missing -> whole batch misses
    for kw in ({"model.inversion_steps": 2}, {"model.inversion_steps": STEPS, "model.dtype": "bfloat16"}):
        assert CachedFeatures(root, SynerDetect.from_preset("tiny", **kw), 64).lookup(images[:4]) is None
    changed = SynerDetect.from_preset("tiny", **{"model.inversion_steps": STEPS})
    cf = CachedFeatures(root, changed, 64)
    assert cf.lookup(images[:4]) is not None
    with torch.no_grad():
        changed.tuner.ctx.add_(0.01)
    assert cf.lookup(images[:4]) is not None  # the key is fixed at construction (cached-fixed) ...
    cf.refresh()
    assert cf.lookup(images[:4]) is None  # ... and follows the weights after refresh (cached-refresh)


def test_policies():
    assert tuple(policy_wants_cache("online", 0, 1)) == (False, False)
    assert tuple(policy_wants_cache("cached-fixed", 0, 1)) == (True, True)
    assert tuple(policy_wants_cache("cached-fixed", 3, 1)) == (True, False)
    assert [policy_wants_cache("cached-refresh", e, 2).build for e in range(5)] == [True, False, True, False, True]
    assert all(policy_wants_cache("cached-refresh", e, 2).read for e in range(5))
    with pytest.raises(ValueError):
        policy_wants_cache("sometimes", 0, 1)


# ---------------------------------------------------------------- exactness
@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_cached_features_equal_recomputed(model, images, tmp_path):
    root = tmp_path / "cache"
    build_cache(model, images, root, image_size=64, batch_size=5, progress=False)
    paths = images[3:9]
    hit = CachedFeatures(root, model, 64).lookup(paths)
    assert isinstance(hit, CachedBatch) and hit.noise_pixels is not None
    x = eval_batch(paths)
    with torch.no_grad():
        x_clip = model.clip_pixels(x)
        cond = model.agnostic_prompt(model.prompts(model.encode_visual(x_clip), x_clip))
        lat = model.encode_latents(x)
        inv = model.invert(lat, cond)
        npx = model.noise_pixels(inv)
    # latents and inverted latents: bitwise what the model computes
    torch.testing.assert_close(hit.latents, lat, rtol=0, atol=0)
    torch.testing.assert_close(hit.inverted, inv, rtol=0, atol=0)
    assert hit[0] is hit.latents and hit[1] is hit.inverted  # tuple access still works
    lat2, inv2, _ = model.cache_features(x)
    torch.testing.assert_close(inv2, inv, rtol=0, atol=0)
    # E_d input: exactly the recomputed one rounded to float16 (the only approximation of the cache) ...
    assert hit.noise_pixels.dtype == torch.float16 and hit.noise_pixels.shape == (len(paths), 3, 64, 64)
    assert torch.equal(hit.noise_pixels, npx.half())
    assert torch.equal(compute_noise_pixels(model, inv), npx.half())
    err = (hit.noise_pixels.float() - npx).abs().max()
    assert 0 < err <= 2e-3 * npx.abs().max()  # really rounded, by at most half an fp16 ulp
    # ... so z_n differs from the recomputed one by a small tolerance only.
    with torch.no_grad():
        f_ref = model.features(x)
        f_npx = model.features(x, cached=hit)
        f_inv = model.features(x, cached=hit._replace(noise_pixels=None))
    torch.testing.assert_close(f_inv["z_n"], f_ref["z_n"], rtol=0, atol=1e-6)  # fp32 float noise only
    torch.testing.assert_close(f_npx["z_n"], f_ref["z_n"], rtol=0, atol=1e-3)
    torch.testing.assert_close(f_npx["z_v"], f_ref["z_v"], rtol=0, atol=0)
    # The detector's decision is the same with the cached tensors.
    a = model.predict(x)
    b = model.predict(x, cached=CachedBatch(None, hit.inverted))
    c = model.predict(x, cached=CachedBatch(None, hit.inverted, hit.noise_pixels))
    torch.testing.assert_close(a["logit"], b["logit"], rtol=0, atol=1e-5)
    torch.testing.assert_close(a["logit"], c["logit"], rtol=0, atol=2e-3)
    # The losses too (the training path, cached-fixed).
    y = torch.tensor([0, 1] * 3)
    with torch.no_grad():
        l_ref = model.compute_losses(
            x, y, cached=hit._replace(noise_pixels=None), generator=torch.Generator().manual_seed(0)
        )
        l_npx = model.compute_losses(x, y, cached=hit, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(l_npx["total"], l_ref["total"], rtol=1e-3, atol=1e-4)


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_latents_only_cache(model, images, tmp_path):
    """store_noise_pixels=False: another key, no E_d input stored, lookups give noise_pixels=None."""
    root = tmp_path / "cache"
    st = build_cache(model, images[:4], root, image_size=64, batch_size=4, progress=False, store_noise_pixels=False)
    assert st["key"] == feature_key(model, image_size=64, store_noise_pixels=False)[0]
    assert CachedFeatures(root, model, 64).lookup(images[:4]) is None  # the default key stores noise pixels
    hit = CachedFeatures(root, model, 64, store_noise_pixels=False).lookup(images[:4])
    assert hit is not None and hit.noise_pixels is None
    doc = json.loads((root / st["key"] / "index.json").read_text())
    assert all("noise_pixels" not in e for e in doc["entries"].values())
    assert doc["info"]["noise_pixels"] == {"stored": False}
    # the full cache is a separate folder; its entries hold the E_d input, indexed with shape and dtype
    st2 = build_cache(model, images[:4], root, image_size=64, batch_size=4, progress=False)
    assert st2["key"] != st["key"] and st2["n_computed"] == 4
    doc2 = json.loads((root / st2["key"] / "index.json").read_text())
    assert all(
        e["noise_pixels"] == [3, 64, 64] and e["noise_pixels_dtype"] == "float16" for e in doc2["entries"].values()
    )
    from safetensors import safe_open

    shard = root / st2["key"] / "shards" / next(iter(doc2["entries"].values()))["shard"]
    with safe_open(str(shard), framework="pt") as f:
        h = next(iter(doc2["entries"]))
        assert f.get_slice(f"{h}.noise_pixels").get_dtype() == "F16"


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_put_many_must_match_the_key(model, images, tmp_path):
    x = eval_batch(images[:2])
    lat, inv, _ = model.cache_features(x)
    hashes = [content_hash(p) for p in images[:2]]
    key, info = feature_key(model, image_size=64)
    with pytest.raises(ValueError, match="noise_pixels"):
        FeatureCache(tmp_path / "a", key, info=info).put_many(hashes, lat, inv)
    key2, info2 = feature_key(model, image_size=64, store_noise_pixels=False)
    with pytest.raises(ValueError, match="noise_pixels"):
        FeatureCache(tmp_path / "b", key2, info=info2).put_many(
            hashes, lat, inv, noise_pixels=compute_noise_pixels(model, inv)
        )
    with pytest.raises(ValueError, match="noise_pixels"):  # wrong batch size
        FeatureCache(tmp_path / "c", key, info=info).put_many(
            hashes, lat, inv, noise_pixels=compute_noise_pixels(model, inv[:1])
        )
    # an entry without the E_d input under a key that stores it (written by hand) is recomputed by a build
    FeatureCache(tmp_path / "d", key).put_many(hashes, lat, inv, paths=images[:2])
    st = build_cache(model, images[:2], tmp_path / "d", image_size=64, batch_size=2, progress=False)
    assert st["n_computed"] == 2 and st["n_skipped_cached"] == 0
    assert CachedFeatures(tmp_path / "d", model, 64).lookup(images[:2]).noise_pixels is not None


# ---------------------------------------------------------------- robustness
def test_atomic_write_failure_leaves_no_partial_shard(model, images, tmp_path, monkeypatch):
    import synerdetect.utils as cache_mod  # the atomic writer the cache uses

    root = tmp_path / "cache"
    key, info = feature_key(model, image_size=64)
    cache = FeatureCache(root, key, info=info)
    x = eval_batch(images[:6])
    lat, inv, _ = model.cache_features(x)
    npx = compute_noise_pixels(model, inv)
    hashes = [content_hash(p) for p in images[:6]]
    cache.put_many(hashes[:3], lat[:3], inv[:3], paths=images[:3], noise_pixels=npx[:3])

    def crash_mid_write(f, data):
        f.write(data[: len(data) // 2])
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(cache_mod, "_write_bytes", crash_mid_write)
    with pytest.raises(OSError, match="simulated"):
        cache.put_many(hashes[3:], lat[3:], inv[3:], paths=images[3:6], noise_pixels=npx[3:])
    monkeypatch.undo()

    # Only the first, complete shard is visible; no temporary file is left; the index knows 3 entries.
    files = list((root / key / "shards").iterdir())
    assert len(files) == 1 and files[0].suffix == ".safetensors"
    fresh = FeatureCache(root, key)
    assert sorted(fresh.hashes()) == sorted(hashes[:3])
    assert all(r is not None for r in fresh.get(hashes[:3]))
    assert fresh.get(hashes[3:]) == [None, None, None]

    # A writer killed outright (no clean-up) leaves a temp file and a torn log line: still consistent.
    (root / key / "shards" / ".r0000-dead.safetensors.1.x.tmp").write_bytes(b"\x00" * 100)
    with open(root / key / "index-rank0.jsonl", "ab") as f:
        f.write(b'{"op": "put", "hash": "abc", "shar')
    fresh = FeatureCache(root, key)
    assert sorted(fresh.hashes()) == sorted(hashes[:3])
    st = build_cache(model, images[:6], root, image_size=64, batch_size=3, progress=False)
    assert st["n_computed"] == 3 and st["n_skipped_cached"] == 3 and st["n_indexed"] == 6
    assert not list((root / key / "shards").glob("*.tmp"))  # the merge collected the leftovers
    doc = json.loads((root / key / "index.json").read_text())
    assert sorted(doc["entries"]) == sorted(hashes)
    for e in doc["entries"].values():
        assert (root / key / "shards" / e["shard"]).is_file()


def damage_file(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "garble":
        for i in range(len(data) - 200, len(data) - 100):  # inside the tensor data, header intact
            data[i] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
@pytest.mark.parametrize("damage", ["garble", "truncate"])
def test_corrupt_shard_is_detected_and_rebuilt(model, images, tmp_path, damage):
    root = tmp_path / "cache"
    st = build_cache(model, images, root, image_size=64, batch_size=4, progress=False)
    key = st["key"]
    shards = shard_files(root, key)
    assert len(shards) == 3
    doc = json.loads((root / key / "index.json").read_text())
    everything = sorted(doc["entries"])
    in_shard = {s.name: sorted(h for h, e in doc["entries"].items() if e["shard"] == s.name) for s in shards}

    # (a) a reader detects the damage, reports it and drops the entries.
    read_victim, build_victim = shards[1], shards[2]
    damage_file(read_victim, damage)
    cache = FeatureCache(root, key)
    res = cache.get(everything)
    bad_read = [h for h, r in zip(everything, res) if r is None]
    if damage == "truncate":
        assert bad_read == in_shard[read_victim.name]
    else:
        assert bad_read and set(bad_read) <= set(in_shard[read_victim.name])  # the entries whose bytes changed
    assert len(cache.problems) == len(bad_read) and all("dropped" in p for p in cache.problems)
    paths_bad = [doc["entries"][h]["path"] for h in bad_read]
    assert CachedFeatures(root, model, 64).lookup(paths_bad) is None

    # (b) damage nobody has read yet: the next build finds it itself (it verifies before skipping).
    damage_file(build_victim, damage)
    st2 = build_cache(model, images, root, image_size=64, batch_size=4, progress=False)
    bad_build = st2["n_dropped_corrupt"]
    assert bad_build >= 1 and (damage == "garble" or bad_build == 4)
    assert st2["n_computed"] == len(bad_read) + bad_build
    assert st2["n_skipped_cached"] == len(images) - st2["n_computed"]
    assert st2["n_indexed"] == len(images)
    if damage == "truncate":
        assert not read_victim.exists() and not build_victim.exists()  # unreferenced, collected by the merge
    fresh = FeatureCache(root, key)
    got = fresh.get(everything)
    assert all(r is not None for r in got) and not fresh.problems
    x = eval_batch(paths_bad)
    rebuilt = fresh.get(bad_read)
    inv = model.cache_features(x).inverted
    torch.testing.assert_close(torch.stack([r.inverted for r in rebuilt]), inv, rtol=0, atol=1e-5)
    # (other build batches: the inverted latents differ by float noise, so the fp16 rounding may flip by 1 ulp)
    torch.testing.assert_close(
        torch.stack([r.noise_pixels for r in rebuilt]).float(),
        compute_noise_pixels(model, inv).float(),
        rtol=0,
        atol=2e-3,
    )


def test_corrupt_noise_pixels_are_detected(model, images, tmp_path):
    """The checksum covers the stored E_d input: one flipped bit in it drops exactly that entry."""
    root = tmp_path / "cache"
    st = build_cache(model, images[:4], root, image_size=64, batch_size=4, progress=False)
    shard = shard_files(root, st["key"])[0]
    data = bytearray(shard.read_bytes())
    n_header = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n_header])
    victim = sorted(k for k in header if k.endswith(".noise_pixels"))[1]
    start = 8 + n_header + header[victim]["data_offsets"][0]
    data[start + 1000] ^= 0x01
    shard.write_bytes(bytes(data))
    everything = sorted(FeatureCache(root, st["key"]).hashes())
    cache = FeatureCache(root, st["key"])
    res = cache.get(everything)
    assert [h for h, r in zip(everything, res) if r is None] == [victim.split(".")[0]]
    assert len(cache.problems) == 1 and "checksum mismatch" in cache.problems[0]
    # the next build recomputes it
    st2 = build_cache(model, images[:4], root, image_size=64, batch_size=4, progress=False)
    assert st2["n_computed"] == 1 and st2["n_skipped_cached"] == 3


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_killed_build_resumes(model, images, tmp_path, monkeypatch):
    root = tmp_path / "cache"
    real_put = FeatureCache.put_many
    calls = {"n": 0}

    def dying_put(self, *a, **kw):
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed (simulated)")
        calls["n"] += 1
        return real_put(self, *a, **kw)

    monkeypatch.setattr(FeatureCache, "put_many", dying_put)
    with pytest.raises(KeyboardInterrupt):
        build_cache(model, images, root, image_size=64, batch_size=3, progress=False)
    monkeypatch.undo()
    st = build_cache(model, images, root, image_size=64, batch_size=3, progress=False)
    assert st["n_skipped_cached"] == 6
    assert st["n_computed"] == len(images) - 6
    assert st["n_indexed"] == len(images)


def test_unreadable_images_are_reported_and_skipped(model, images, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    missing = str(tmp_path / "gone.png")
    st = build_cache(
        model, images[:3] + [str(bad), missing], tmp_path / "cache", image_size=64, batch_size=4, progress=False
    )
    assert st["n_computed"] == 3 and st["n_unreadable"] == 2
    reported = dict(st["unreadable"])
    assert set(reported) == {str(bad), missing} and all(reported.values())


# ---------------------------------------------------------------- scale-out
WORKER = textwrap.dedent(
    """
    import json, sys, torch
    torch.set_num_threads(1)
    from synerdetect import SynerDetect
    from synerdetect.cache import build_cache
    paths, root, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
    m = SynerDetect.from_preset("tiny", **{"model.inversion_steps": STEPS_VALUE}).eval()
    st = build_cache(m, paths, root, image_size=64, batch_size=2, progress=False, wait_timeout=240, poll_interval=0.05)
    open(out, "w").write(json.dumps(st))
""".replace("STEPS_VALUE", str(STEPS))
)


@pytest.mark.slow
def test_two_process_sharded_build(model, images, tmp_path):
    root = tmp_path / "cache"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = []
    for r in range(2):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE="2", OMP_NUM_THREADS="1")
        procs.append(
            subprocess.Popen(
                [sys.executable, str(script), json.dumps(images), str(root), str(tmp_path / f"stats{r}.json")],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
    s0, s1 = (json.loads((tmp_path / f"stats{r}.json").read_text()) for r in range(2))
    key = s0["key"]
    assert s1["key"] == key == feature_key(model, image_size=64)[0]
    assert s0["n_computed"] == s1["n_computed"] == len(images) // 2  # disjoint halves, both did work
    assert s0["all_ranks"]["n_computed"] == len(images)
    d = root / key
    doc = json.loads((d / "index.json").read_text())
    assert sorted(doc["entries"]) == sorted(content_hash(p) for p in images)  # every image exactly once
    assert sorted(e["path"] for e in doc["entries"].values()) == sorted(images)
    assert not list(d.glob("index-rank*.jsonl")) and not list(d.glob("done-rank*"))
    shards_used = {e["shard"] for e in doc["entries"].values()}
    assert {p.name for p in shard_files(root, key)} == shards_used
    assert {s[:5] for s in shards_used} == {"r0000", "r0001"}
    # The merged cache serves the in-process model.
    hit = CachedFeatures(root, model, 64).lookup(images)
    assert hit is not None and hit.inverted.shape == (len(images), 4, 8, 8)
    assert hit.noise_pixels.shape == (len(images), 3, 64, 64)
