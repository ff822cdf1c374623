"""Tests for synerdetect.contrastive (Eq. 7) against a plain-numpy loop reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synerdetect.losses.contrastive import dcl_loss, dcl_loss_two_views


def _dcl_ref(anchors, z, labels, tau):
    """Eq. 7 with explicit loops in float64."""
    n = len(labels)
    total = 0.0
    for i in range(n):
        t = anchors[i] / np.linalg.norm(anchors[i])

        def sim(j, t=t):
            zj = z[j] / np.linalg.norm(z[j])
            return float(t @ zj)

        pos = sim(i) / tau
        denom = math.exp(pos)
        for j in range(n):
            if j != i and labels[j] != labels[i]:
                denom += math.exp(sim(j) / tau)
        total += -pos + math.log(denom)
    return total / n


def _batch(seed, n=4, d=6):
    rng = np.random.default_rng(seed)
    prompts = rng.normal(size=(2, d))  # one text prompt per label
    labels = np.array([0, 1, 1, 0][:n] if n <= 4 else rng.integers(0, 2, size=n))
    anchors = prompts[labels] + 0.05 * rng.normal(size=(n, d))  # per-sample anchors may differ
    z = rng.normal(size=(n, d))
    return anchors, z, labels


@pytest.mark.parametrize("tau", [0.07, 0.5, 1.0])
@pytest.mark.parametrize("n", [3, 4])
def test_dcl_matches_numpy_loops(tau, n):
    anchors, z, labels = _batch(0, n=n)
    out = dcl_loss(torch.tensor(anchors), torch.tensor(z), torch.tensor(labels), tau)
    assert out.ndim == 0
    np.testing.assert_allclose(out.item(), _dcl_ref(anchors, z, labels, tau), rtol=1e-10)


def test_dcl_float32_and_small_tau_stable():
    anchors, z, labels = _batch(1, n=16, d=32)
    out = dcl_loss(
        torch.tensor(anchors, dtype=torch.float32), torch.tensor(z, dtype=torch.float32), torch.tensor(labels), 0.01
    )
    assert torch.isfinite(out)
    np.testing.assert_allclose(out.item(), _dcl_ref(anchors, z, labels, 0.01), rtol=1e-4)


def test_dcl_scale_invariant():
    anchors, z, labels = _batch(2)
    a, zz, y = torch.tensor(anchors), torch.tensor(z), torch.tensor(labels)
    base = dcl_loss(a, zz, y, 0.1)
    scales = torch.tensor([0.1, 3.0, 7.0, 100.0], dtype=torch.float64)[:, None]
    np.testing.assert_allclose(dcl_loss(a * 5.0, zz * scales, y, 0.1).item(), base.item(), rtol=1e-10)


def test_dcl_no_negatives_contributes_zero():
    anchors, z, _ = _batch(3)
    same = torch.zeros(4, dtype=torch.long)
    out = dcl_loss(torch.tensor(anchors), torch.tensor(z), same, 0.1)
    assert out.item() == 0.0
    # Mixed batch: every term includes its negatives and is strictly positive on average.
    mixed = dcl_loss(torch.tensor(anchors), torch.tensor(z), torch.tensor([0, 1, 0, 1]), 0.1)
    assert mixed.item() > 0


def test_dcl_gradients_exist():
    anchors, z, labels = _batch(4)
    a = torch.tensor(anchors, requires_grad=True)
    zz = torch.tensor(z, requires_grad=True)
    dcl_loss(a, zz, torch.tensor(labels), 0.2).backward()
    for t in (a, zz):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_dcl_two_views_is_mean():
    anchors, z_v, labels = _batch(5)
    z_n = np.random.default_rng(6).normal(size=z_v.shape)
    a, y = torch.tensor(anchors), torch.tensor(labels)
    out = dcl_loss_two_views(a, torch.tensor(z_v), torch.tensor(z_n), y, 0.3)
    ref = 0.5 * (_dcl_ref(anchors, z_v, labels, 0.3) + _dcl_ref(anchors, z_n, labels, 0.3))
    np.testing.assert_allclose(out.item(), ref, rtol=1e-10)


def test_dcl_validation():
    a, z = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, 1, 0, 1])
    with pytest.raises(ValueError, match="binary"):
        dcl_loss(a, z, torch.tensor([0, 1, 2, 1]), 0.1)
    with pytest.raises(ValueError):
        dcl_loss(a, torch.randn(3, 3), y, 0.1)
    with pytest.raises(ValueError):
        dcl_loss(a, z, y[:3], 0.1)
    with pytest.raises(ValueError):
        dcl_loss(a, z, y, 0.0)
    with pytest.raises(ValueError):
        dcl_loss(a[0], z[0], y[:1], 0.1)
    # bool and float labels are accepted
    np.testing.assert_allclose(dcl_loss(a, z, y.bool(), 0.1).item(), dcl_loss(a, z, y.float(), 0.1).item())


def test_dcl_with_other_class_prompt_by_hand():
    """The class-negative variant adds exp(cos(other_prompt_i, z_i)/tau) to sample i's denominator."""
    rng = np.random.default_rng(7)
    t = rng.normal(size=(4, 5))
    tb = rng.normal(size=(4, 5))
    z = rng.normal(size=(4, 5))
    y = np.array([0, 1, 1, 0])
    tau = 0.3

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    total = 0.0
    for i in range(4):
        pos = cos(t[i], z[i]) / tau
        den = np.exp(pos) + sum(np.exp(cos(t[i], z[j]) / tau) for j in range(4) if y[j] != y[i])
        den += np.exp(cos(tb[i], z[i]) / tau)
        total += -pos + np.log(den)
    expected = total / 4
    got = dcl_loss(torch.tensor(t), torch.tensor(z), torch.tensor(y), tau, torch.tensor(tb))
    assert abs(float(got) - expected) < 1e-9
    # and it is the literal Eq. 7 when no other-class prompts are given
    assert float(dcl_loss(torch.tensor(t), torch.tensor(z), torch.tensor(y), tau)) < expected
