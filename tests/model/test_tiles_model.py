"""The whole-image view in the model: tile aggregation against a hand computation, and a tile that is exactly the
centre crop gives the centre view's logit (one Eq. 10 code path)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from synerdetect.model.evidence import aggregate_tiles

pytestmark = pytest.mark.usefixtures("one_thread")


def test_aggregation_rules_by_hand():
    # image 0: tiles with logits 0.1, 0.5, -0.2, 0.3; image 1: one tile with logit -0.4
    sim = torch.tensor([[0.0, 0.1], [0.1, 0.6], [0.3, 0.1], [0.2, 0.5], [0.5, 0.1]])
    owner = torch.tensor([0, 0, 0, 0, 1])
    mean = aggregate_tiles(sim, owner, 2, "mean")
    assert torch.allclose(mean[0], torch.tensor([0.15, 0.325]))
    assert torch.allclose(mean[:, 1] - mean[:, 0], torch.tensor([(0.1 + 0.5 - 0.2 + 0.3) / 4, -0.4]))
    assert torch.equal(aggregate_tiles(sim, owner, 2, "max")[0], sim[1])
    top2 = aggregate_tiles(sim, owner, 2, "topk", k=2)
    assert torch.allclose(top2[0, 1] - top2[0, 0], torch.tensor((0.5 + 0.3) / 2))
    assert torch.allclose(aggregate_tiles(sim, owner, 2, "topk", k=9)[1], sim[4])  # k larger than the tile count


@pytest.mark.parametrize("rule", ["mean", "max", "topk"])
def test_single_centre_tile_equals_center_view(tiny_model, rule):
    model = copy.copy(tiny_model)  # a shallow copy with its own config: the shared model stays untouched
    model.cfg = copy.deepcopy(tiny_model.cfg)
    rng = np.random.default_rng(1)
    s = model.mcfg.clip_size
    imgs = [Image.fromarray(rng.integers(0, 255, (s, s, 3), dtype=np.uint8)) for _ in range(2)]
    center = model.predict(model.preprocess(imgs))
    model.cfg.data.eval_view, model.cfg.data.tile_aggregate = "tiles", rule
    tiled = model.preprocess(imgs)
    assert tiled.tiles.shape[0] == 2  # one tile per image: the centre crop itself
    out = model.predict(tiled)
    torch.testing.assert_close(out["logit"], center["logit"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["sim_n_fake"], center["sim_n_fake"], atol=1e-5, rtol=0)
