"""Issue 23: the Table 5a comparison on equal footing.

DIRE's error map with a perfect reconstructor (zero online; the cache is refused in training), the fusions' LoRA
switch, the optimiser search on a validation split (never the test set), and the SD 2.1 768-v config through the
v-prediction path.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from synerdetect.config import ConfigError
from synerdetect.data.layouts import Sample
from synerdetect.data.transforms import Views
from synerdetect.methods import build_detector
from synerdetect.methods.references import DIRE
from synerdetect.model.base import CachedBatch
from synerdetect.presets import load_experiment

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _cfg(method: str, *over: str):
    return load_experiment(None, [f"method={method}", "model.inversion_steps=2", *over], "tiny")


# ---------------------------------------------------------------- 1. DIRE on the cached path
def _perfect_reconstructor(model: DIRE, monkeypatch) -> None:
    """Inversion = the SD view itself, regeneration = identity: x' equals the image the inversion was run on."""

    def inversion_inputs(images, *_args, **_kw):
        sd = (images.sd if isinstance(images, Views) else images).float()
        return CachedBatch(None, sd.clone())

    monkeypatch.setattr(model, "inversion_inputs", inversion_inputs)
    monkeypatch.setattr(model, "regenerate", lambda inverted: inverted)


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_dire_map_is_zero_online_with_a_perfect_reconstructor_and_the_cache_is_refused(monkeypatch):
    model = build_detector(_cfg("dire"))
    assert isinstance(model, DIRE)
    _perfect_reconstructor(model, monkeypatch)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 64, 64, generator=g)
    evaluation = Views(x, x)
    augmented = Views(x.flip(-1), x.flip(-1))  # the training view: flipped (both views flip together)
    # Online: the reconstruction is of the view being classified, whatever the augmentation.
    assert float(model.dire_map(augmented).abs().max()) == 0.0
    assert float(model.dire_map(evaluation).abs().max()) == 0.0
    # What a cache would give in training: the evaluation view's inversion against the flipped x = |flip(x) - x|.
    cached = model.cache_features(evaluation)
    torch.testing.assert_close(model.dire_map(augmented, cached), (x.flip(-1) - x).abs())
    assert float((x.flip(-1) - x).abs().mean()) > 0.1
    # ... so training refuses every cached policy while it augments, in one line that says why,
    for policy in ("cached-fixed", "cached-refresh"):
        for aug in ("data.flip=true", "data.blur_prob=0.1", "data.jpeg_prob=0.1"):
            off = ["data.flip=false", "data.blur_prob=0", "data.jpeg_prob=0"]
            with pytest.raises(ConfigError, match="online only.*flip") as e:
                build_detector(_cfg("dire", f"cache.policy={policy}", *off, aug))
            assert "\n" not in str(e.value)
    # and accepts it without augmentation, where the training view is the evaluation view: the map is zero again.
    plain = build_detector(
        _cfg("dire", "cache.policy=cached-fixed", "data.flip=false", "data.blur_prob=0", "data.jpeg_prob=0")
    )
    assert isinstance(plain, DIRE)
    assert float(model.dire_map(evaluation, cached).abs().max()) == 0.0


# ---------------------------------------------------------------- 2. the fusions' LoRA switch
def _lora_names(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n}


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_fusions_can_train_synerdetects_lora():
    from synerdetect import SynerDetect

    ours = SynerDetect.from_preset("tiny")
    ours_lora = {n: p.shape for n, p in ours.named_parameters() if p.requires_grad and "lora_" in n}
    assert ours_lora
    plain = build_detector(_cfg("fusion_c"))
    assert not _lora_names(plain) and plain.E_v is plain.E_d  # default: frozen features, one shared tower
    for method in ("fusion_a", "fusion_b", "fusion_c"):
        model = build_detector(_cfg(method, "model.reference_lora=true"))
        assert model.E_v is not model.E_d
        # the same LoRA as SynerDetect's: same modules, names and shapes on both towers
        assert {n: p.shape for n, p in model.named_parameters() if n in _lora_names(model)} == ours_lora
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert trainable == _lora_names(model) | {n for n in trainable if n.startswith("head.")}
    # the gradient of the fusion's loss reaches both towers' LoRA (B starts at zero, so A gets none at step 0)
    model = build_detector(_cfg("fusion_c", "model.reference_lora=true"))
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    model.train()
    model.compute_losses(x, torch.tensor([0, 1, 0, 1]))["total"].backward()
    for tower in ("E_v", "E_d"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(tower) and "lora_B" in n]
        assert grads and all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_reference_lora_is_refused_where_it_does_not_apply():
    for method in ("unifd", "dire", "inversion_probe"):
        with pytest.raises(ConfigError, match="reference_lora applies to the fusions"):
            build_detector(_cfg(method, "model.reference_lora=true"))


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_fusion_with_lora_reloads_with_identical_logits(tmp_path):
    from synerdetect.methods import load_detector

    model = build_detector(_cfg("fusion_c", "model.reference_lora=true"))
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2)))
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    reloaded = load_detector(model.save_pretrained(tmp_path / "ck"))
    assert _lora_names(reloaded) == _lora_names(model)
    torch.testing.assert_close(reloaded.predict(x)["logit"], model.predict(x)["logit"], rtol=0, atol=1e-6)


# ---------------------------------------------------------------- 2. the optimiser search
def _samples(n: int) -> list[Sample]:
    return [Sample(f"/d/{g}/{y}/{i}.png", y, g) for g in ("a", "b") for y in (0, 1) for i in range(n)]


def test_validation_split_is_stratified_disjoint_and_deterministic():
    from synerdetect.engine.tuning import validation_split

    samples = _samples(8)
    tr, va = validation_split(samples, 0.25, seed=3)
    assert len(va) == 8 and len(tr) == 24
    assert not {s.path for s in tr} & {s.path for s in va}
    assert {s.path for s in tr} | {s.path for s in va} == {s.path for s in samples}
    for g in ("a", "b"):
        for y in (0, 1):
            assert sum(s.generator == g and s.label == y for s in va) == 2
    assert validation_split(list(reversed(samples)), 0.25, seed=3) == (tr, va)  # input order does not matter
    with pytest.raises(ValueError, match="too few"):
        validation_split(_samples(1), 0.25)


def test_pick_takes_the_best_validation_ap_then_accuracy_then_grid_order():
    from synerdetect.engine.tuning import GRID, pick

    assert len(GRID) == 6 and {o for o, _ in GRID} == {"sgd", "adamw"}
    rs = [
        {"optim": "sgd", "lr": 1e-4, "val_ap": 0.7, "val_acc": 0.6},
        {"optim": "sgd", "lr": 1e-3, "val_ap": 0.8, "val_acc": 0.6},
        {"optim": "adamw", "lr": 1e-3, "val_ap": 0.8, "val_acc": 0.7},
        {"optim": "adamw", "lr": 1e-2, "val_ap": 0.8, "val_acc": 0.7},
    ]
    assert pick(rs) is rs[2]


def test_tune_trains_on_train_and_scores_on_validation_only(monkeypatch, tmp_path):
    """Every candidate trains on the training split's manifest with its own optimiser and is scored on the
    validation split; nothing else (in particular no test set) is evaluated."""
    import synerdetect.engine.tuning as tuning
    from synerdetect.data import load_labelled
    from synerdetect.engine.tuning import tune, validation_split

    samples = _samples(4)
    tr, va = validation_split(samples, 0.25)
    trained, scored = [], []

    def fake_train(cfg, **_kw):
        trained.append(
            (
                cfg.optim.name,
                cfg.optim.lr,
                cfg.method,
                sorted(s.path for s in load_labelled(cfg.data.train, "manifest", None)),
            )
        )
        return {"final": cfg.train.output_dir, "seconds": 0.0}

    def fake_evaluate(model, samples, *_args, **_kw):
        scored.append(sorted(s.path for s in samples))
        lr = model
        return {"summary": {"mean": {"acc": 0.5, "ap": 1.0 - abs(lr - 1e-3)}}}

    # the names tune() calls, as bound in its module
    monkeypatch.setattr(tuning, "train", fake_train)
    monkeypatch.setattr(tuning, "evaluate", fake_evaluate)
    monkeypatch.setattr(tuning, "load_detector", lambda folder: _LR(folder))
    grid = [("sgd", 1e-4), ("adamw", 1e-3), ("adamw", 1e-2)]
    res = tune(load_experiment(None, [], "tiny"), "unifd", tr, va, tmp_path, grid=grid)
    assert [(o, lr) for o, lr, _, _ in trained] == grid and {m for _, _, m, _ in trained} == {"unifd"}
    assert all(paths == sorted(str(Path(s.path).resolve()) for s in tr) for *_, paths in trained)
    assert scored == [sorted(s.path for s in va)] * 3
    assert (res["choice"]["optim"], res["choice"]["lr"]) == ("adamw", 1e-3)


class _LR(float):
    """Stands in for a trained model in the tune() test: the learning rate parsed back from the run folder."""

    def __new__(cls, folder: str):
        return super().__new__(cls, float(Path(folder).name.split("_")[1]))

    def eval(self):
        return self


# ---------------------------------------------------------------- 5. SD 2.1 768-v
@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_sd21_768v_config_names_the_v_model_and_uses_the_v_prediction_path(tmp_path):
    from synerdetect.model.backbones import write_tiny_sd

    cfg = load_experiment(CONFIGS / "sd21_768v.yaml")
    assert cfg.model.sd == "stabilityai/stable-diffusion-2-1" and cfg.model.sd_size == 768
    assert cfg.preset == "paper" and cfg.model.inversion_steps == 100 and cfg.optim.name == "sgd"
    # The same file on a tiny v-prediction SD (built from config, saved with save_pretrained): the SD folder's
    # scheduler selects v-prediction, and Eq. 2 is the epsilon-MSE of the converted v output.
    sd = write_tiny_sd(tmp_path / "sd_v", prediction_type="v_prediction")
    small = ["preset=tiny", "model.clip=tiny", f"model.sd={sd}", "model.sd_size=64", "model.inversion_steps=2"]
    model = build_detector(load_experiment(CONFIGS / "sd21_768v.yaml", small))
    assert model.prediction_type == "v_prediction"
    z0 = torch.randn(2, 4, 8, 8)
    c = F.normalize(torch.randn(2, 32), dim=-1)
    loss = model.cmid_loss(z0, c, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    t = torch.randint(0, 1000, (2,), generator=g)
    eps = torch.randn(z0.shape, generator=g)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    ab = torch.cumprod(1 - betas, 0)[t].float().view(-1, 1, 1, 1)
    noisy = ab.sqrt() * z0 + (1 - ab).sqrt() * eps
    with torch.no_grad():
        v = model.unet(noisy, t, encoder_hidden_states=model.sd_context(c)).sample
    eps_pred = (1 - ab).sqrt() * noisy + ab.sqrt() * v  # v = sqrt(a) eps - sqrt(1 - a) z0
    torch.testing.assert_close(loss.detach(), ((eps_pred - eps) ** 2).mean(), atol=1e-5, rtol=1e-5)
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    out = copy.deepcopy(model).compute_losses(x, torch.tensor([0, 1, 0, 1]))
    assert all(torch.isfinite(v) for v in out.values())


# ---------------------------------------------------------------- records
def test_docs_cite_no_path_outside_the_repository():
    root = Path(__file__).resolve().parents[2]
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "configs").glob("*"))]:
        text = doc.read_text()
        assert "shared/paper" not in text and "/work/" not in text, doc.name
