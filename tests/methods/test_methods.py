"""The method registry and the paper's reference methods (Table 5a, Figure 3) on the tiny preset.

Each reference is a :class:`Detector` beside SynerDetect (not a subclass of it) that builds only the modules it
reads, trains (its loss falls on a fixed batch), keeps CLIP and SD frozen, reloads through ``load_detector`` with
identical logits, reads the feature cache, follows SynerDetect's predict contract, and trains through train().
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from synerdetect import SynerDetect
from synerdetect.config import ConfigError, ExperimentConfig
from synerdetect.methods import (
    METHODS,
    build_detector,
    check_method,
    get_method,
    list_methods,
    load_detector,
    parse_methods,
)
from synerdetect.methods.references import DIRE, ReferenceMethod, UniFD
from synerdetect.model import Detector
from synerdetect.model.detector import CheckpointError, InputError

REFERENCES = [m for m in list_methods() if m != "synerdetect"]
STEPS = {"model.inversion_steps": 2}


def batch(b: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 64, 64, generator=g), torch.tensor([0, 1] * (b // 2))


def build(method: str, **over) -> Detector:
    from synerdetect.presets import load_experiment

    cfg = load_experiment(None, [f"method={method}", *(f"{k}={v}" for k, v in {**STEPS, **over}.items())], "tiny")
    return build_detector(cfg)


@pytest.fixture(scope="module")
def models() -> dict[str, Detector]:
    """One untrained model per reference, shared by the read-only tests below."""
    return {m: build(m) for m in REFERENCES}


# ---------------------------------------------------------------- registry and config
def test_registry_names_every_method_of_table_5a():
    assert list_methods()[0] == "synerdetect"
    assert set(list_methods()) == {
        "synerdetect",
        "unifd",
        "dire",
        "inversion_probe",
        "fusion_a",
        "fusion_b",
        "fusion_c",
    }
    assert get_method("synerdetect") is SynerDetect
    for name in REFERENCES:
        cls = get_method(name)
        assert issubclass(cls, ReferenceMethod) and cls.method_name == name


def test_unknown_method_is_refused_with_the_known_ones():
    for call in (lambda: get_method("nope"), lambda: check_method("nope"), lambda: build("nope")):
        with pytest.raises(ConfigError) as e:
            call()
        assert "'nope'" in str(e.value)
        for name in METHODS:
            assert name in str(e.value)


def test_method_is_part_of_the_config():
    from synerdetect.presets import load_experiment

    assert ExperimentConfig().method == "synerdetect"
    assert load_experiment(None, ["method=dire"], preset="tiny").method == "dire"
    assert parse_methods("all") == list_methods()
    assert parse_methods(" unifd,dire ,unifd") == ["unifd", "dire"]
    with pytest.raises(ConfigError, match="known methods"):
        parse_methods("unifd,nope")


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_build_detector_builds_the_configured_method(models):
    assert type(build("synerdetect")) is SynerDetect
    for name, model in models.items():
        assert type(model) is get_method(name) and model.cfg.method == name


# ---------------------------------------------------------------- class hierarchy: siblings under Detector
def test_references_are_detectors_beside_synerdetect(models):
    assert issubclass(SynerDetect, Detector)
    for name, model in models.items():
        assert isinstance(model, Detector) and not isinstance(model, SynerDetect), name
        assert not issubclass(get_method(name), SynerDetect), name


def _module_types(model: torch.nn.Module) -> set[str]:
    return {type(m).__name__ for m in model.modules()}


def test_references_build_only_the_modules_they_read(models):
    syn_types = _module_types(build("synerdetect"))
    # what only SynerDetect builds: the prompt tuner, the text tower, the LoRA layers (peft's lora.Linear)
    only_synerdetect = {"VisualAwareTuner", "PromptTextEncoder", "Linear"} & syn_types
    assert {"VisualAwareTuner", "PromptTextEncoder"} <= only_synerdetect
    for name, model in models.items():
        names = [n for n, _ in model.named_parameters()]
        assert not any("lora_" in n for n in names), name
        assert not any(n.startswith(("tuner.", "text.", "cond_proj.", "adapter.")) for n in names), name
        assert not {"VisualAwareTuner", "PromptTextEncoder"} & _module_types(model), name
        assert not any(type(m).__module__.startswith("peft") for m in model.modules()), name
    unifd = models["unifd"]
    assert not hasattr(unifd, "unet") and not hasattr(unifd, "vae") and not hasattr(unifd, "E_d")
    assert {n.split(".")[0] for n, _ in unifd.named_parameters()} == {"E_v", "head"}
    dire = models["dire"]
    assert not hasattr(dire, "E_v") and not hasattr(dire, "E_d")
    assert {n.split(".")[0] for n, _ in dire.named_parameters()} == {"unet", "vae", "head"}
    # the fusions read vanilla CLIP twice: one tower serves as E_v and E_d
    fusion = models["fusion_c"]
    assert fusion.E_v is fusion.E_d
    clip_params = sum(p.numel() for n, p in fusion.named_parameters() if n.startswith(("E_v.", "E_d.")))
    assert clip_params == sum(p.numel() for p in fusion.E_v.parameters())


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_from_pretrained_builds_its_own_class_only(tmp_path):
    folder = build("unifd").save_pretrained(tmp_path / "u")
    with pytest.raises(CheckpointError, match="'unifd'.*synerdetect.methods.*load_detector") as e:
        SynerDetect.from_pretrained(folder)
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match="'unifd'"):
        get_method("dire").from_pretrained(folder)
    assert type(UniFD.from_pretrained(folder)) is UniFD
    with pytest.raises(ConfigError, match="'fusion_c'.*build_detector"):
        SynerDetect.from_preset("tiny", method="fusion_c")
    assert type(UniFD.from_preset("tiny")) is UniFD  # a class's own preset build sets its method


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_load_detector_round_trips_every_method(models, tmp_path):
    for name in list_methods():
        model = build(name) if name == "synerdetect" else models[name]
        state = model.trainable_state_dict()
        assert state, name
        reloaded = load_detector(model.save_pretrained(tmp_path / name))
        assert type(reloaded) is get_method(name) and reloaded.cfg.method == name
        got = reloaded.trainable_state_dict()
        assert got.keys() == state.keys(), name
        for k, v in state.items():
            assert torch.equal(got[k], v), (name, k)


def test_model_package_never_imports_the_registry():
    """The layering: model is below methods, so no module of synerdetect.model imports synerdetect.methods (nor
    cache / engine), at the top or inside a function."""
    import ast

    root = Path(__file__).resolve().parents[2] / "src" / "synerdetect"
    above = ("methods", "cache", "engine", "serve", "cli", "demo", "bench")
    offenders = []
    for path in sorted((root / "model").rglob("*.py")):
        pkg = path.relative_to(root.parent).with_suffix("").parts[:-1]  # e.g. ("synerdetect", "model")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = list(pkg[: len(pkg) - node.level + 1]) if node.level else []
                names = [".".join([*base, *(node.module or "").split(".")]).strip(".")]
                if not node.module:
                    names = [".".join([*base, a.name]) for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for full in names:
                parts = full.split(".")
                if parts[0] == "synerdetect" and len(parts) > 1 and parts[1] in above:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno} imports {full}")
    assert not offenders, offenders


# ---------------------------------------------------------------- training
@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
@pytest.mark.parametrize("method", REFERENCES)
def test_reference_trains_its_head_only_and_its_loss_falls(models, method):
    model = copy.deepcopy(models[method])  # trained in place: a copy of the shared one (cheaper than a build)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("head.") for n in trainable)  # CLIP, LoRA, SD, tuner: frozen
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    x, y = batch(4)
    # the fixed batch's inversion, computed once (the feature cache's path); UniFD has none
    cached = model.cache_features(x) if model.uses_sd else None
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=3e-4)
    model.train()
    losses = []
    for _ in range(6):
        out = model.compute_losses(x, y, cached=cached)
        assert {"total", "ce", "cr", "dcl", "pot", "ot_dcl"} <= set(out)
        assert all(v.ndim == 0 and torch.isfinite(v) for v in out.values())
        opt.zero_grad()
        out["total"].backward()
        opt.step()
        losses.append(float(out["total"].detach()))
    assert losses[-1] < losses[0], losses
    for n, p in model.named_parameters():
        if n in frozen_before:
            assert torch.equal(p, frozen_before[n]), n


def test_fusion_b_has_the_uni_code_terms(models):
    x, y = batch()
    out = models["fusion_b"].compute_losses(x, y)
    assert float(out["vq"]) > 0 and float(out["align"]) > 0
    expected = out["ce"] + out["vq"] + out["align"]
    torch.testing.assert_close(out["total"], expected)


# ---------------------------------------------------------------- predict contract, cache, checkpoints
def _perturb_head(model: Detector, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
@pytest.mark.parametrize("method", REFERENCES)
def test_predict_contract_and_cached_features(models, method):
    model = models[method]
    x, _ = batch(4, seed=3)
    out = model.predict(x)
    tau = model.mcfg.tau
    torch.testing.assert_close(out["prob_fake"], torch.sigmoid(out["logit"] / tau))
    torch.testing.assert_close(out["s_fake"] - out["s_real"], out["logit"])
    assert torch.equal(out["label"], (out["logit"] > 0).long())
    for k in ("sim_v_real", "sim_v_fake", "sim_n_real", "sim_n_fake"):
        assert torch.isnan(out[k]).all()
    # The inversion the feature cache stores gives the same decision as the online one.
    if model.uses_sd:
        hit = model.predict(x, cached=model.cache_features(x))
        torch.testing.assert_close(hit["logit"], out["logit"], rtol=0, atol=1e-5)
    else:  # no inversion, no cache: said in one line
        with pytest.raises(ConfigError, match="no feature cache"):
            model.cache_features(x)
    # the views of preprocess() work like plain tensors
    from PIL import Image

    pil = [Image.fromarray((x[i].permute(1, 2, 0).numpy() * 255).astype("uint8")) for i in range(2)]
    assert model.predict(model.preprocess(pil))["logit"].shape == (2,)


def test_perceptual_mode_only_where_the_method_has_that_path(models):
    x, _ = batch(4)
    unifd = models["unifd"]
    assert isinstance(unifd, UniFD)
    torch.testing.assert_close(unifd.predict(x, mode="perceptual")["logit"], unifd.predict(x)["logit"])
    for name in ("dire", "inversion_probe", "fusion_a", "fusion_b", "fusion_c"):
        with pytest.raises(InputError, match="no perceptual-only path"):
            models[name].predict(x, mode="perceptual")


def test_dire_map_is_the_reconstruction_error(models):
    model = models["dire"]
    assert isinstance(model, DIRE)
    x, _ = batch(2)
    d = model.dire_map(x)
    assert d.shape == (2, 3, 64, 64) and float(d.min()) >= 0 and float(d.max()) <= 1
    assert float(d.mean()) > 0  # a 2-step round trip through random SD does not reproduce the image


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
@pytest.mark.parametrize("method", REFERENCES)
def test_checkpoint_reloads_with_identical_logits(models, method, tmp_path):
    model = copy.deepcopy(models[method])
    _perturb_head(model)
    x, _ = batch(4, seed=5)
    before = model.predict(x)
    folder = model.save_pretrained(tmp_path / "ckpt")
    doc = json.loads((folder / "synerdetect_config.json").read_text())
    assert doc["config"]["method"] == method
    reloaded = load_detector(folder)
    assert type(reloaded) is type(model)
    assert reloaded.trainable_state_dict().keys() == model.trainable_state_dict().keys()
    for k, v in model.trainable_state_dict().items():
        assert torch.equal(reloaded.trainable_state_dict()[k], v), k
    after = reloaded.predict(x)
    for k in ("s_real", "s_fake", "logit", "prob_fake"):
        torch.testing.assert_close(before[k], after[k], rtol=0, atol=1e-6)
    assert reloaded.trainable_fingerprint() == model.trainable_fingerprint()


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_checkpoint_of_another_method_does_not_load_into_a_reference(tmp_path):
    build("unifd").save_pretrained(tmp_path / "u")
    model = build("fusion_c")
    with pytest.raises(CheckpointError, match="shape"):  # same parameter names, another head
        model.load_trainable(tmp_path / "u")
    with pytest.raises(CheckpointError, match="does not match"):
        build("dire").load_trainable(tmp_path / "u")


# ---------------------------------------------------------------- train() and the CLI
@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_train_with_a_reference_method(bench, tmp_path):
    from synerdetect.engine.train import train
    from synerdetect.presets import load_experiment

    over = [
        "method=fusion_c",
        f"data.train={bench / 'train'}",
        "data.train_layout=cnndetection",
        "model.inversion_steps=2",
        "train.batch_size=4",
        "train.max_steps=3",
        "train.num_workers=0",
        f"train.output_dir={tmp_path / 'run'}",
    ]
    cfg = load_experiment(None, over, preset="tiny")
    seen: list[dict] = []
    summary = train(cfg, resume="never", progress=False, on_step=lambda _s, losses: seen.append(losses))
    assert summary["global_step"] == 3 and len(seen) == 3 and all("ce" in v for v in seen)
    model = load_detector(summary["final"])
    assert model.cfg.method == "fusion_c" and type(model).__name__ == "FusionC"
    fresh = build("fusion_c")
    assert model.trainable_fingerprint() != fresh.trainable_fingerprint()  # the head was trained and saved


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "synerdetect.cli", *args], capture_output=True, text=True, env=env, timeout=900
    )


@pytest.mark.slow
def test_cli_train_method_then_evaluate(bench, tmp_path):
    out = tmp_path / "run"
    common = ["train", "--preset", "tiny", "--no-progress", f"data.train={bench / 'train'}", "model.inversion_steps=2"]
    r = _run([*common, "--method", "nope", f"train.output_dir={out}"])
    assert r.returncode != 0 and "invalid choice: 'nope'" in r.stderr and "unifd" in r.stderr  # argparse lists them
    r = _run([*common, "--method", "dire", "train.batch_size=4", "train.max_steps=2", f"train.output_dir={out}"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "method: dire" in (out / "config.yaml").read_text()
    data = bench / "test"
    r = _run(
        ["evaluate", "--checkpoint", str(out / "final"), "--data", str(data), "--layout", "cnndetection"]
        + ["--split", "test", "--out", str(tmp_path / "eval"), "--no-progress"]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert "gan_upsample" in res["generators"]


@pytest.mark.slow
def test_demo_methods_writes_the_comparison(tmp_path):
    out = tmp_path / "demo"
    r = _run(["demo", "--quick", "--no-progress", "--out", str(out), "--methods", "unifd,fusion_c"])
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads((out / "comparison.json").read_text())
    assert list(doc["methods"]) == ["unifd", "fusion_c"]
    families = {"gan_upsample", "gan_spectral", "diffusion_latent", "diffusion_noise"}
    for m in doc["methods"].values():
        assert set(m["generators"]) == families
        assert 0 <= m["mean"]["acc"] <= 1 and set(m["mean"]) == {"acc", "ap"}
    md = (out / "comparison.md").read_text()
    assert md.count("| unifd |") == 1 and md.count("| fusion_c |") == 1
    assert (out / "comparison_logits.png").stat().st_size > 5000
    assert type(load_detector(out / "checkpoints" / "fusion_c")).__name__ == "FusionC"


def test_ablation_fusion_config_documents_every_reference():
    text = (Path(__file__).resolve().parents[2] / "configs" / "ablation_fusion.yaml").read_text()
    for name in REFERENCES:
        assert f"--method {name}" in text


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_training_a_reference_head_keeps_its_feature_cache_valid(tiny_model):
    """The references invert with SD's empty prompt: their feature-cache key does not move when the head trains,
    while SynerDetect's key follows the prompt weights its inversion is conditioned on."""
    from synerdetect.cache import feature_key

    ref = build("fusion_c")
    before = feature_key(ref, image_size=None)[0]
    _perturb_head(ref, seed=3)
    assert feature_key(ref, image_size=None)[0] == before
    assert feature_key(ref, image_size=None)[1]["conditioning_fingerprint"].startswith("unconditional")
    ours = feature_key(tiny_model, image_size=None)[0]
    saved = tiny_model.tuner.ctx.detach().clone()
    try:
        with torch.no_grad():
            tiny_model.tuner.ctx.add_(0.01)
        assert feature_key(tiny_model, image_size=None)[0] != ours
    finally:
        with torch.no_grad():
            tiny_model.tuner.ctx.copy_(saved)
