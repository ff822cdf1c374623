"""Model core: Eq. 1, 2, 9, 10 against independent computations, gradient routing, loading, bad input."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synerdetect import SynerDetect
from synerdetect.config import ConfigError
from synerdetect.model.backbones import write_tiny_clip, write_tiny_sd
from synerdetect.model.detector import InputError
from synerdetect.model.inversion import ddim_invert, ddim_sample
from synerdetect.model.prompt import BayarConv2d


def batch(b=8, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g), torch.tensor([0, 1] * (b // 2))


def perturb_trainables(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))


# ---------------------------------------------------------------- loading
@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_real_folders_load_and_reload_identically(tmp_path):
    clip_dir = write_tiny_clip(tmp_path / "clip", seed=3)
    sd_dir = write_tiny_sd(tmp_path / "sd", seed=3)
    for sub in ("model_index.json", "unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (sd_dir / sub).exists(), sub
    assert (clip_dir / "config.json").is_file() and (clip_dir / "model.safetensors").is_file()
    model = SynerDetect.from_preset(
        "tiny", **{"model.clip": str(clip_dir), "model.sd": str(sd_dir), "model.inversion_steps": 4}
    )
    perturb_trainables(model)
    x, _ = batch(4)
    before = model.predict(x)
    out = model.save_pretrained(tmp_path / "ckpt")
    assert (out / "trainable.safetensors").is_file()
    reloaded = SynerDetect.from_pretrained(out)
    after = reloaded.predict(x)
    for k in ("s_real", "s_fake", "logit", "prob_fake"):
        torch.testing.assert_close(before[k], after[k], rtol=0, atol=1e-6)
    assert torch.equal(before["label"], after["label"])


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_tiny_checkpoint_is_self_contained(tmp_path):
    model = SynerDetect.from_preset("tiny", **{"model.inversion_steps": 3})
    model.save_pretrained(tmp_path / "ck")
    assert (tmp_path / "ck" / "base" / "sd" / "model_index.json").is_file()
    assert (tmp_path / "ck" / "base" / "clip" / "config.json").is_file()
    r = SynerDetect.from_pretrained(tmp_path / "ck")
    assert r.clip_source.endswith("base/clip") and r.sd_source.endswith("base/sd")


def test_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "sd").mkdir()
    with pytest.raises(Exception, match="model_index.json"):
        SynerDetect.from_preset("tiny", **{"model.sd": str(tmp_path / "sd")})


# ---------------------------------------------------------------- Eq. 1
def test_prompt_text_encoder_matches_transformers_text_features(tiny_model):
    """With the context set to the placeholder tokens' own embeddings, our inputs_embeds path must equal
    transformers' CLIPModel.get_text_features on the token ids."""
    from synerdetect.model.backbones.loaders import load_clip

    clip, tok = load_clip("tiny")
    enc = tiny_model.text
    ids = enc.token_ids
    x_id = ids[0, 1]
    ctx = clip.text_model.embeddings.token_embedding(x_id).expand(1, enc.n_ctx, -1)
    ours = enc(ctx)[0]
    with torch.no_grad():
        ref = clip.get_text_features(input_ids=ids)
        ref = ref.pooler_output if hasattr(ref, "pooler_output") else ref
    torch.testing.assert_close(ours, F.normalize(ref.float(), dim=-1), atol=1e-5, rtol=1e-5)


def test_tuner_equation_1_by_hand(tiny_model):
    tuner = copy.deepcopy(tiny_model.tuner)
    with torch.no_grad():
        for p in tuner.attn.parameters():
            p.normal_(0, 0.2)
    z_v = F.normalize(torch.randn(2, 32), dim=-1)
    x = torch.rand(2, 3, 64, 64)
    out = tuner(z_v, x).detach().numpy()

    def ln(a, mod):
        a = a.detach().numpy().astype(np.float64)
        mu, var = a.mean(-1, keepdims=True), a.var(-1, keepdims=True)
        return (a - mu) / np.sqrt(var + mod.eps) * mod.weight.detach().numpy() + mod.bias.detach().numpy()

    ctx = tuner.ctx.detach().numpy()
    q_in = ln(tuner.ctx, tuner.ln_q)
    kv = np.concatenate([ln(tuner.zv_proj(z_v)[:, None], tuner.ln_zv), ln(tuner.cconv(x), tuner.ln_local)], axis=1)
    W = tuner.attn.in_proj_weight.detach().numpy()
    bias = tuner.attn.in_proj_bias.detach().numpy()
    d = ctx.shape[1]
    h = tuner.attn.num_heads
    Wo, bo = tuner.attn.out_proj.weight.detach().numpy(), tuner.attn.out_proj.bias.detach().numpy()
    for i in range(2):
        q = q_in @ W[:d].T + bias[:d]
        k = kv[i] @ W[d : 2 * d].T + bias[d : 2 * d]
        v = kv[i] @ W[2 * d :].T + bias[2 * d :]
        heads = []
        for j in range(h):
            sl = slice(j * d // h, (j + 1) * d // h)
            a = q[:, sl] @ k[:, sl].T / math.sqrt(d // h)
            a = np.exp(a - a.max(1, keepdims=True))
            a /= a.sum(1, keepdims=True)
            heads.append(a @ v[:, sl])
        expected = ctx + np.concatenate(heads, 1) @ Wo.T + bo
        np.testing.assert_allclose(out[i], expected, atol=1e-4)


def test_bayar_constraint_holds_after_optimizer_steps():
    torch.manual_seed(0)
    conv = BayarConv2d(3, 3, 5)
    opt = torch.optim.SGD(conv.parameters(), lr=0.5, momentum=0.9)
    for _ in range(5):
        loss = conv(torch.rand(2, 3, 16, 16)).pow(2).mean() + conv.weight[:, :, 0, 0].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    w = conv.weight.detach().numpy()
    np.testing.assert_allclose(w[:, :, 2, 2], -1.0, atol=1e-6)
    off = w.copy()
    off[:, :, 2, 2] = 0
    np.testing.assert_allclose(off.sum(axis=(2, 3)), 1.0, atol=1e-5)


# ---------------------------------------------------------------- Eq. 2
@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_cmid_loss_equation_2_by_hand(tmp_path, prediction_type):
    sd = write_tiny_sd(tmp_path / "sd", prediction_type=prediction_type)
    model = SynerDetect.from_preset("tiny", **{"model.sd": str(sd), "model.inversion_steps": 2})
    assert model.prediction_type == prediction_type
    z0 = torch.randn(3, 4, 8, 8)
    c = F.normalize(torch.randn(3, 32), dim=-1)
    loss = model.cmid_loss(z0, c, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    t = torch.randint(0, 1000, (3,), generator=g)
    eps = torch.randn(z0.shape, generator=g)
    # alphas_cumprod of the scaled-linear schedule, computed here from the betas definition
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    ab = torch.cumprod(1 - betas, 0)[t].float().view(-1, 1, 1, 1)
    noisy = ab.sqrt() * z0 + (1 - ab).sqrt() * eps
    ctx = model.empty_context + model.cond_proj(c).unsqueeze(1)
    with torch.no_grad():
        pred = model.unet(noisy, t, encoder_hidden_states=ctx).sample
    # Eq. 2 is an epsilon-MSE for both kinds of UNet: a v output is converted to epsilon by the closed form
    # v = sqrt(a) eps - sqrt(1 - a) z0 and x_t = sqrt(a) z0 + sqrt(1 - a) eps  =>  eps = sqrt(1 - a) x_t + sqrt(a) v
    eps_pred = pred if prediction_type == "epsilon" else (1 - ab).sqrt() * noisy + ab.sqrt() * pred
    expected = ((eps_pred - eps) ** 2).mean()
    torch.testing.assert_close(loss.detach(), expected, atol=1e-5, rtol=1e-5)
    losses = model.compute_losses(*batch(4))
    assert torch.isfinite(losses["total"])


# ---------------------------------------------------------------- inversion
@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_ddim_inversion_then_sampling_returns_to_start(tiny_model):
    """DDIM inversion is exact when the UNet's prediction does not depend on x (float precision),
    and its error shrinks with more steps for a smooth UNet (a random tiny UNet is far rougher than a
    trained one, so its output scale is reduced to play that part)."""
    torch.manual_seed(0)
    z0 = torch.randn(2, 4, 8, 8) * 0.8
    ctx = tiny_model.sd_context(F.normalize(torch.randn(2, 32), dim=-1)).detach()

    def roundtrip(scale, steps):
        unet = copy.deepcopy(tiny_model.unet)
        with torch.no_grad():
            unet.conv_out.weight.mul_(scale)
        zT = ddim_invert(unet, tiny_model.scheduler_config, z0, ctx, steps)
        back = ddim_sample(unet, tiny_model.scheduler_config, zT, ctx, steps)
        return zT, float((back - z0).norm() / z0.norm())

    zT, err = roundtrip(0.0, 10)
    assert (zT - z0).abs().mean() > 0.1  # the inversion moved the latent
    assert err < 1e-5
    _, err10 = roundtrip(0.1, 10)
    _, err50 = roundtrip(0.1, 50)
    assert err50 < 0.05 and err50 < err10


def test_inversion_builds_no_graph(tiny_model):
    cond = F.normalize(torch.randn(2, 32), dim=-1).requires_grad_(True)
    out = tiny_model.invert(torch.randn(2, 4, 8, 8), cond, steps=3)
    assert out.grad_fn is None and not out.requires_grad


# ---------------------------------------------------------------- Eq. 9 / gradient routing
def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    groups = {"E_v": model.E_v, "E_d": model.E_d, "tuner": model.tuner, "cond_proj": model.cond_proj}
    out = {}
    for name, mod in groups.items():
        gs = [p.grad for p in mod.parameters() if p.requires_grad]
        out[name] = any(g is not None and g.abs().sum() > 0 for g in gs)
    return out


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_gradient_routing_and_total_loss():
    model = SynerDetect.from_preset("tiny", **{"model.inversion_steps": 3})
    perturb_trainables(model)
    model.train()
    x, y = batch(8)
    L = model.compute_losses(x, y, generator=torch.Generator().manual_seed(0))
    lam, alpha = model.lcfg.lam, model.lcfg.alpha
    torch.testing.assert_close(L["ot_dcl"], L["dcl"] + alpha * L["pot"])
    torch.testing.assert_close(L["total"], lam * L["cr"] + (1 - lam) * L["ot_dcl"])
    for k in ("cr", "dcl", "pot", "ot_dcl", "total"):
        assert L[k].ndim == 0
    assert _grads(model, L["cr"]) == {"E_v": True, "E_d": False, "tuner": True, "cond_proj": True}
    assert _grads(model, L["dcl"]) == {"E_v": True, "E_d": True, "tuner": True, "cond_proj": False}
    assert _grads(model, L["pot"]) == {"E_v": True, "E_d": True, "tuner": False, "cond_proj": False}
    model.zero_grad(set_to_none=True)
    L["total"].backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert "lora_" in name or name.split(".")[0] in {"tuner", "cond_proj"}, name
        else:
            assert p.grad is None, f"frozen parameter {name} received a gradient"
    assert all(not p.requires_grad for p in model.unet.parameters())
    assert all(not p.requires_grad for p in model.vae.parameters())
    assert all(not p.requires_grad for p in model.text.parameters())
    assert not model.unet.training and not model.vae.training


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_label_agnostic_inversion_and_predict(monkeypatch):
    import inspect

    model = SynerDetect.from_preset("tiny", **{"model.inversion_steps": 2})
    assert "labels" not in inspect.signature(model.predict).parameters
    seen = []
    orig = model.invert

    def spy(latents, cond, steps=None):
        seen.append(cond.detach().clone())
        return orig(latents, cond, steps)

    monkeypatch.setattr(model, "invert", spy)
    x, y = batch(4)
    model.compute_losses(x, y, generator=torch.Generator().manual_seed(0))
    model.compute_losses(x, 1 - y, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(seen[0], seen[1], atol=0, rtol=0)


# ---------------------------------------------------------------- Eq. 10
@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_predict_equation_10(tiny_model):
    model = copy.deepcopy(tiny_model)
    perturb_trainables(model, seed=4)
    x, _ = batch(4, seed=2)
    out = model.predict(x)
    with torch.no_grad():
        f = model.features(x)
    zv, zn, zt = (f[k].double().numpy() for k in ("z_v", "z_n", "z_t"))

    def cos(a, b):
        return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)

    s = np.stack([cos(zv, zt[:, c]) + cos(zn, zt[:, c]) for c in range(2)], 1)
    np.testing.assert_allclose(out["s_real"].numpy(), s[:, 0], atol=1e-5)
    np.testing.assert_allclose(out["s_fake"].numpy(), s[:, 1], atol=1e-5)
    tau = model.mcfg.tau
    e = np.exp(s / tau - (s / tau).max(1, keepdims=True))
    np.testing.assert_allclose(out["prob_fake"].numpy(), e[:, 1] / e.sum(1), atol=1e-5)
    np.testing.assert_array_equal(out["label"].numpy(), (s[:, 1] > s[:, 0]).astype(int))


# ---------------------------------------------------------------- ablations
@pytest.mark.parametrize(
    "ablation", ["no_cmid", "no_ot_dcl", "no_pot", "fixed_prompts", "tuner_no_global", "tuner_no_local"]
)
@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_ablations_run(ablation):
    from synerdetect.presets import ABLATIONS

    patch = {f"{sec}.{k}": v for sec, d in ABLATIONS[ablation].items() for k, v in d.items()}
    model = SynerDetect.from_preset("tiny", **patch, **{"model.inversion_steps": 2})
    x, y = batch(4)
    L = model.compute_losses(x, y)
    L["total"].backward()
    if ablation == "no_cmid":
        assert L["cr"] == 0 and model.cond_proj.weight.grad is None
    if ablation == "no_pot":
        assert L["pot"] == 0
    if ablation == "fixed_prompts":
        zt = model.features(x)["z_t"]
        torch.testing.assert_close(zt[0], zt[1])


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_adapter_noise_input_trains():
    model = SynerDetect.from_preset("tiny", **{"model.noise_encoder_input": "adapter", "model.inversion_steps": 2})
    L = model.compute_losses(*batch(4))
    L["total"].backward()
    assert model.adapter.weight.grad is not None and model.adapter.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "images,labels,match",
    [
        (torch.rand(4, 64, 64), None, "B x 3 x H x W"),
        (torch.rand(4, 1, 64, 64), None, "B x 3 x H x W"),
        ((torch.rand(4, 3, 64, 64) * 255).to(torch.uint8), None, "float"),
        (torch.rand(4, 3, 64, 64) * 255, None, r"\[0, 1\]"),
        (torch.full((4, 3, 64, 64), float("nan")), None, "NaN"),
        (torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 1]), "0 \\(real\\) or 1"),
        (torch.rand(4, 3, 64, 64), torch.tensor([0, 1]), "length 4"),
        (torch.rand(4, 3, 64, 64), torch.tensor([1, 1, 1, 1]), "both real and fake"),
    ],
)
def test_bad_input_is_a_clear_error(tiny_model, images, labels, match):
    with pytest.raises(InputError, match=match):
        if labels is None:
            tiny_model.predict(images)
        else:
            tiny_model.compute_losses(images, labels)


def test_config_dimension_mismatch_is_reported_before_building():
    with pytest.raises(ConfigError, match="clip_size"):
        SynerDetect.from_preset("tiny", **{"model.clip_size": 224})
    with pytest.raises(ConfigError, match="tuner_heads"):
        SynerDetect.from_preset("tiny", **{"model.tuner_heads": 7})
    with pytest.raises(ConfigError, match="unknown preset"):
        SynerDetect.from_preset("nope")
    with pytest.raises(ConfigError, match="unknown config key"):
        SynerDetect.from_preset("tiny", **{"model.not_a_key": 1})


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_bf16_frozen_models_train_with_fp32_trainables():
    model = SynerDetect.from_preset("tiny", **{"model.dtype": "bfloat16", "model.inversion_steps": 3})
    assert next(model.unet.parameters()).dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.trainable_parameters())
    L = model.compute_losses(*batch(4))
    L["total"].backward()
    assert torch.isfinite(L["total"])
    grads = [p.grad for p in model.trainable_parameters() if p.grad is not None]
    assert grads and all(g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    ref = SynerDetect.from_preset("tiny", **{"model.inversion_steps": 3})
    x, _ = batch(4, seed=3)
    torch.testing.assert_close(model.predict(x)["s_fake"], ref.predict(x)["s_fake"], atol=0.05, rtol=0)


def test_dimension_mismatch_is_found_before_weights_load(monkeypatch):
    import synerdetect.model.base as mod

    def boom(*_a, **_k):
        raise AssertionError("weights were loaded before the dimension check")

    monkeypatch.setattr(mod, "load_base_models", boom)
    with pytest.raises(ConfigError, match="clip_size"):
        SynerDetect.from_preset("tiny", **{"model.clip_size": 224})


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for ckpt in (False, True):
        model = SynerDetect.from_preset("tiny", **{"model.gradient_checkpointing": ckpt, "model.inversion_steps": 2})
        perturb_trainables(model)
        model.train()
        L = model.compute_losses(*batch(4), generator=torch.Generator().manual_seed(0))
        L["total"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any("E_v" in k and "lora" in k for k in grads[1])
    for k in grads[0]:
        torch.testing.assert_close(grads[0][k], grads[1][k], atol=1e-5, rtol=1e-4, msg=k)


@pytest.mark.slow  # over ~1 s on 2 cores: outside the fast loop
def test_sd_size_off_the_unets_native_size_warns(caplog):
    """The tiny UNet's sample_size is 8 latents x VAE factor 8 = 64 px; 128 px runs it off its resolution."""
    import logging

    with caplog.at_level(logging.WARNING, logger="synerdetect"):
        SynerDetect.from_preset("tiny", **{"model.sd_size": 128, "model.inversion_steps": 1})
    assert any("native size 64 px" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="synerdetect"):
        SynerDetect.from_preset("tiny", **{"model.inversion_steps": 1})
    assert not any("native size" in r.getMessage() for r in caplog.records)


def test_perceptual_mode_is_the_clip_branch_of_eq_10(tiny_model):
    x, _ = batch(4)
    full = tiny_model.predict(x)
    per = tiny_model.predict(x, mode="perceptual")
    # the perceptual margin is exactly the first term of Eq. 10, computed by the full path too
    torch.testing.assert_close(per["logit"], full["sim_v_fake"] - full["sim_v_real"], rtol=0, atol=1e-6)
    torch.testing.assert_close(
        full["logit"],
        (full["sim_v_fake"] + full["sim_n_fake"]) - (full["sim_v_real"] + full["sim_n_real"]),
        rtol=0,
        atol=1e-6,
    )
    assert torch.isnan(per["sim_n_real"]).all()
    with pytest.raises(InputError, match="mode"):
        tiny_model.predict(x, mode="fast")


@pytest.mark.parametrize("out_init", [0.0, 0.004])
def test_tuner_parts_get_a_gradient_at_step_0_unless_the_output_starts_at_zero(out_init):
    """With a zero output projection, d(out)/d(attention, z_v projection, CConv) = W_out^T (...) = 0 at step 0 (by
    hand: the output is W_out @ attention + b); with the small default init every part gets a gradient, and the
    per-image term starts at a few percent of ||p_c|| (7.5 % measured at widths 64 and 768)."""
    from synerdetect.model.prompt import VisualAwareTuner

    torch.manual_seed(0)
    t = VisualAwareTuner(
        64, 32, 4, 8, use_global=True, use_local=True, cconv_filters=3, cconv_kernel=5, cconv_channels=8,
        cconv_grid=2, out_init=out_init,
    )  # fmt: skip
    z_v = torch.nn.functional.normalize(torch.randn(4, 32), dim=-1)
    out = t(z_v, torch.rand(4, 3, 32, 32))
    term = (out - t.ctx).norm(dim=-1).mean() / t.ctx.norm(dim=-1).mean()
    (out**2).sum().backward()
    parts = {
        "attention": t.attn.in_proj_weight,
        "z_v projection": t.zv_proj.weight,
        "CConv": t.cconv.bayar.parametrizations.weight.original,
    }
    norms = {k: float(p.grad.norm()) if p.grad is not None else 0.0 for k, p in parts.items()}
    if out_init == 0:
        assert float(term) == 0.0 and all(v == 0.0 for v in norms.values()), norms
    else:
        assert 0.01 < float(term) < 0.2 and all(v > 0 for v in norms.values()), (float(term), norms)


def _lora_dropouts(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The dropout module of every LoRA layer peft injected (its ``lora_dropout`` ModuleDict, adapter "default")."""
    return [
        m.lora_dropout["default"]
        for m in model.modules()
        if isinstance(getattr(m, "lora_dropout", None), torch.nn.ModuleDict)
    ]


@pytest.mark.slow  # over ~0.5 s on 2 cores: outside the fast loop
def test_lora_dropout_reaches_peft(tiny_model):
    model = SynerDetect.from_preset("tiny", **{"model.lora_dropout": 0.5, "model.inversion_steps": 1})
    drops = _lora_dropouts(model)
    targets = sum(
        1
        for enc in (model.E_v, model.E_d)
        for n, _ in enc.named_modules()
        if n.split(".")[-1] in model.mcfg.lora_targets
    )
    assert targets > 0 and len(drops) == targets  # every LoRA layer of E_v and E_d
    assert all(type(d) is torch.nn.Dropout and d.p == 0.5 for d in drops)
    # the default (0.0) is no dropout at all
    assert all(not isinstance(d, torch.nn.Dropout) for d in _lora_dropouts(tiny_model))
