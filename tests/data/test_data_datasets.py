from __future__ import annotations

import logging

import pytest
import torch
from torch.utils.data import DataLoader

from data_fixtures import make_tree, write_garbage, write_truncated_jpeg
from synerdetect.data import (
    BalancedBatchSampler,
    EvalTransform,
    ImageDataset,
    TrainTransform,
    collate,
    discover,
)


@pytest.fixture
def tree_with_bad_files(tmp_path):
    root = tmp_path / "ds"
    make_tree(
        root,
        [f"test/gen/0_real/r{i}.png" for i in range(5)] + [f"test/gen/1_fake/f{i}.png" for i in range(5)],
        w=40,
        h=36,
    )
    bad = {
        "trunc": write_truncated_jpeg(root / "test/gen/1_fake/trunc.jpg"),
        "garbage": write_garbage(root / "test/gen/0_real/garbage.jpg"),
        "empty": root / "test/gen/1_fake/empty.png",
    }
    bad["empty"].write_bytes(b"")
    return root, bad


def test_getitem_good_and_bad(tree_with_bad_files):
    root, bad = tree_with_bad_files
    samples = discover(root)
    ds = ImageDataset(samples, EvalTransform(32))
    assert len(ds) == 13
    by_path = {s.path: i for i, s in enumerate(samples)}
    for name, p in bad.items():
        i = by_path[str(p)]
        rec = ds[i]
        assert set(rec) == {"error", "path", "index"}, name
        assert rec["path"] == str(p) and rec["index"] == i and rec["error"]
    good_i = by_path[str(root / "test/gen/0_real/r0.png")]
    rec = ds[good_i]
    assert rec["image"].shape == (3, 32, 32) and rec["label"] == 0 and rec["generator"] == "gen"
    assert rec["index"] == good_i and rec["path"].endswith("r0.png") and rec["format"] == "PNG"
    assert float(rec["image"].std()) > 0.05  # a real image, not zeros


def test_collate_drops_and_reports(tree_with_bad_files, caplog):
    root, bad = tree_with_bad_files
    samples = discover(root)
    ds = ImageDataset(samples, EvalTransform(32))
    with caplog.at_level(logging.WARNING, logger="synerdetect.data.datasets"):
        batch = collate([ds[i] for i in range(len(ds))])
        collate([ds[i] for i in range(len(ds))])  # second time: no new warnings
    assert batch["image"].shape == (10, 3, 32, 32)
    assert batch["label"].dtype == torch.long and batch["label"].tolist().count(1) == 5
    assert len(batch["path"]) == len(batch["generator"]) == len(batch["index"]) == len(batch["format"]) == 10
    assert sorted(p for p, _ in batch["errors"]) == sorted(str(p) for p in bad.values())
    assert all(reason for _, reason in batch["errors"])
    warned = [r for r in caplog.records if "skipping unreadable image" in r.getMessage()]
    assert len(warned) == 3
    assert all(any(str(p) in r.getMessage() for r in warned) for p in bad.values())


def test_collate_all_bad():
    out = collate([{"error": "empty file (0 bytes)", "path": "/nope/x.png", "index": 0}])
    assert out["image"].shape[0] == 0 and len(out["label"]) == 0
    assert out["errors"] == [("/nope/x.png", "empty file (0 bytes)")]


def test_transform_failure_is_reported_not_raised(tree_with_bad_files):
    root, _ = tree_with_bad_files
    samples = [s for s in discover(root) if s.path.endswith(".png") and "empty" not in s.path]

    def broken(_img, _rng):
        raise RuntimeError("boom")

    rec = ImageDataset(samples, broken)[0]
    assert "boom" in rec["error"]


def test_per_item_rng_reproducible(tree_with_bad_files):
    root, _ = tree_with_bad_files
    samples = [s for s in discover(root) if "/r" in s.path or "/f" in s.path][:6]
    t = TrainTransform(16, blur_prob=0.5, jpeg_prob=0.5)
    ds = ImageDataset(samples, t, seed=3)
    e0 = [ds[i]["image"] for i in range(len(ds))]
    again = [ImageDataset(samples, t, seed=3)[i]["image"] for i in reversed(range(len(ds)))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(e0, again))  # order independent
    ds.set_epoch(1)
    e1 = [ds[i]["image"] for i in range(len(ds))]
    assert not all(torch.equal(a, b) for a, b in zip(e0, e1))
    ds0 = ImageDataset(samples, t, seed=3)
    assert all(torch.equal(ds0[(i, 1)]["image"], e1[i]) for i in range(len(ds)))  # (index, epoch) keys
    other_seed = ImageDataset(samples, t, seed=4)
    assert not all(torch.equal(other_seed[i]["image"], e0[i]) for i in range(len(ds)))


def test_dataloader_workers_match_single_process(tree_with_bad_files):
    root, bad = tree_with_bad_files
    samples = discover(root)
    ds = ImageDataset(samples, TrainTransform(16), seed=1)
    sampler = BalancedBatchSampler([s.label for s in samples], 4, seed=2, drop_last=False)

    def run(workers):
        loader = DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
        return list(loader)

    b0, b2 = run(0), run(2)
    assert len(b0) == len(b2) == len(sampler)
    for x, y in zip(b0, b2):
        assert torch.equal(x["image"], y["image"]) and x["path"] == y["path"]
    errs = {p for b in b0 for p, _ in b["errors"]}
    assert errs <= {str(p) for p in bad.values()}


def test_bad_constructor_args():
    with pytest.raises(TypeError):
        ImageDataset([], None)
    with pytest.raises(ValueError):
        ImageDataset([], EvalTransform(8), seed=-1)
