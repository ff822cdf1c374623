"""Tests for synerdetect.losses.ot against independent references (numpy/scipy/POT/sklearn)."""

from __future__ import annotations

import numpy as np
import ot as pot  # the POT library
import pytest
import scipy.linalg
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.mixture import GaussianMixture

from synerdetect.losses import ot as sot

# ----------------------------------------------------------------------------
# helpers (numpy float64 references, written independently of the module)
# ----------------------------------------------------------------------------


def _rand_spd(rng, d, n=None):
    a = rng.normal(size=(d, n or d + 3))
    return a @ a.T / a.shape[1] + 0.05 * np.eye(d)


def _w2_ref(ma, sa, mb, sb):
    """Squared W2 between N(ma, sa) and N(mb, sb), Eq. 4, via scipy sqrtm."""
    ra = scipy.linalg.sqrtm(sa)
    cross = scipy.linalg.sqrtm(ra @ sb @ ra)
    return float(np.sum((ma - mb) ** 2) + np.trace(sa) + np.trace(sb) - 2 * np.real(np.trace(cross)))


def _t(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64)


def _clusters(rng, centers, n_per, scale):
    xs, ys = [], []
    for c, (mu, n) in enumerate(zip(centers, n_per)):
        xs.append(mu + scale * rng.normal(size=(n, len(mu))))
        ys += [c] * n
    x = np.concatenate(xs)
    perm = rng.permutation(len(x))
    return x[perm], np.array(ys)[perm]


def _match(est, ref):
    """Permutation of est rows matching ref rows (Hungarian on distances)."""
    d = ((est[:, None, :] - ref[None, :, :]) ** 2).sum(-1)
    row, col = linear_sum_assignment(d)
    perm = np.empty(len(ref), dtype=int)
    perm[col] = row
    return perm


# ----------------------------------------------------------------------------
# Gaussian W2 (Eq. 4)
# ----------------------------------------------------------------------------


def test_w2_full_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    d, ka, kb = 5, 3, 4
    ma, mb = rng.normal(size=(ka, d)), rng.normal(size=(kb, d))
    sa = np.stack([_rand_spd(rng, d) for _ in range(ka)])
    sb = np.stack([_rand_spd(rng, d, n=2) for _ in range(kb)])  # near rank-deficient
    c = sot.gaussian_w2_cost(_t(ma), _t(sa), _t(mb), _t(sb), covariance="full").numpy()
    ref = np.array([[_w2_ref(ma[i], sa[i], mb[j], sb[j]) for j in range(kb)] for i in range(ka)])
    np.testing.assert_allclose(c, ref, rtol=1e-8, atol=1e-8)


def test_w2_diag_matches_reference_and_full_path():
    rng = np.random.default_rng(1)
    d, ka, kb = 6, 3, 2
    ma, mb = rng.normal(size=(ka, d)), rng.normal(size=(kb, d))
    va, vb = rng.uniform(0.01, 2.0, size=(ka, d)), rng.uniform(0.01, 2.0, size=(kb, d))
    c_diag = sot.gaussian_w2_cost(_t(ma), _t(va), _t(mb), _t(vb), covariance="diag").numpy()
    ref = np.array([[_w2_ref(ma[i], np.diag(va[i]), mb[j], np.diag(vb[j])) for j in range(kb)] for i in range(ka)])
    np.testing.assert_allclose(c_diag, ref, rtol=1e-8, atol=1e-10)
    full_a = torch.diag_embed(_t(va))
    full_b = torch.diag_embed(_t(vb))
    c_full = sot.gaussian_w2_cost(_t(ma), full_a, _t(mb), full_b, covariance="full").numpy()
    np.testing.assert_allclose(c_full, c_diag, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_w2_self_zero_and_symmetric(covariance):
    rng = np.random.default_rng(2)
    d, k = 4, 3
    m = _t(rng.normal(size=(k, d)))
    if covariance == "diag":
        s = _t(rng.uniform(0.1, 1.0, size=(k, d)))
    else:
        s = _t(np.stack([_rand_spd(rng, d) for _ in range(k)]))
    c = sot.gaussian_w2_cost(m, s, m, s, covariance=covariance)
    np.testing.assert_allclose(torch.diagonal(c).numpy(), 0.0, atol=1e-10)
    np.testing.assert_allclose(c.numpy(), c.T.numpy(), atol=1e-10)
    assert (c >= 0).all()


def test_sqrtm_psd_gradcheck_including_repeated_eigenvalues():
    rng = np.random.default_rng(3)
    a = _t(_rand_spd(rng, 4)).requires_grad_(True)
    assert torch.autograd.gradcheck(sot.sqrtm_psd, (a,))
    # floor*I + rank-1: three identical eigenvalues (typical of batch covariances
    # with N < D); autograd through eigh would divide by zero here.
    u = rng.normal(size=(4, 1))
    b = _t(1e-1 * np.eye(4) + u @ u.T).requires_grad_(True)
    assert torch.autograd.gradcheck(sot.sqrtm_psd, (b,))
    np.testing.assert_allclose(
        sot.sqrtm_psd(b).detach().numpy(), np.real(scipy.linalg.sqrtm(b.detach().numpy())), atol=1e-10
    )


def test_w2_full_gradients_finite_with_floored_low_rank_covs():
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(6, 16), dim=1).requires_grad_(True)
    y = torch.nn.functional.normalize(torch.randn(6, 16), dim=1).requires_grad_(True)
    gx = sot.fit_gmm(x, 2, covariance="full")
    gy = sot.fit_gmm(y, 2, covariance="full")
    c = sot.gaussian_w2_cost(gx.means, gx.covs, gy.means, gy.covs, covariance="full")
    c.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_w2_shape_errors():
    m = torch.zeros(2, 3)
    with pytest.raises(ValueError):
        sot.gaussian_w2_cost(m, torch.ones(2, 3), m, torch.ones(2, 3), covariance="full")
    with pytest.raises(ValueError):
        sot.gaussian_w2_cost(m, torch.ones(2, 3), m, torch.ones(2, 3), covariance="spherical")


# ----------------------------------------------------------------------------
# Sinkhorn (Eq. 5)
# ----------------------------------------------------------------------------


def _ot_problem(seed, ka=4, kb=5):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.2, 1.0, size=ka)
    b = rng.uniform(0.2, 1.0, size=kb)
    c = rng.uniform(0.0, 2.0, size=(ka, kb))
    return a / a.sum(), b / b.sum(), c


@pytest.mark.parametrize("eps", [1.0, 0.1, 0.02, 0.005])
def test_sinkhorn_marginals_and_pot_agreement(eps):
    a, b, c = _ot_problem(0)
    plan = sot.sinkhorn(_t(c), _t(a), _t(b), eps, iters=20000, tol=1e-9)
    assert plan.dtype == torch.float32 and not plan.requires_grad
    p = plan.double().numpy()
    np.testing.assert_allclose(p.sum(1), a, atol=1e-5)
    np.testing.assert_allclose(p.sum(0), b, atol=1e-5)
    ref = pot.sinkhorn(a, b, c, eps, method="sinkhorn_log", numItermax=100000, stopThr=1e-12)
    np.testing.assert_allclose(p, ref, atol=1e-5)
    if eps >= 0.1:  # plain POT Sinkhorn is only stable for moderate eps
        ref2 = pot.sinkhorn(a, b, c, eps, numItermax=100000, stopThr=1e-12)
        np.testing.assert_allclose(p, ref2, atol=1e-5)


def test_sinkhorn_small_eps_approaches_emd():
    a, b, c = _ot_problem(1)
    exact = pot.emd2(a, b, c)
    gaps = []
    for eps in [0.5, 0.1, 0.02, 0.005]:
        plan = sot.sinkhorn(_t(c), _t(a), _t(b), eps, iters=50000, tol=1e-9).double().numpy()
        gaps.append(float((plan * c).sum()) - exact)
    assert all(g >= -1e-5 for g in gaps)  # exact OT is a lower bound
    assert gaps[-1] < 5e-3
    assert gaps == sorted(gaps, reverse=True)


def test_sinkhorn_renormalises_drift_and_validates():
    a, b, c = _ot_problem(2)
    plan = sot.sinkhorn(_t(c), _t(a * (1 + 1e-6)), _t(b), 0.1, iters=5000, tol=1e-9)
    np.testing.assert_allclose(plan.double().sum(1).numpy(), a, atol=1e-5)
    with pytest.raises(ValueError):
        sot.sinkhorn(_t(c), _t(a * 2), _t(b), 0.1)
    bad = a.copy()
    bad[0], bad[1] = 0.0, bad[0] + bad[1]
    with pytest.raises(ValueError):
        sot.sinkhorn(_t(c), _t(bad), _t(b), 0.1)
    with pytest.raises(ValueError):
        sot.sinkhorn(_t(c), _t(a), _t(b), 0.0)
    with pytest.raises(ValueError):
        sot.sinkhorn(_t(c), _t(b), _t(a), 0.1)  # shape mismatch


# ----------------------------------------------------------------------------
# GMM
# ----------------------------------------------------------------------------


CENTERS = np.array([[3.0, 0.0, 0.0, 1.0], [-3.0, 1.0, 0.0, 0.0], [0.0, -3.0, 2.0, 0.0]])


def test_gmm_recovers_separated_clusters():
    rng = np.random.default_rng(4)
    x, _ = _clusters(rng, CENTERS, [60, 30, 10], 0.2)
    g = sot.fit_gmm(torch.tensor(x), 3, iters=30)
    assert g.means.dtype == torch.float32 and g.covs.shape == (3, 4) and g.resp.shape == (100, 3)
    perm = _match(g.means.detach().numpy(), CENTERS)
    np.testing.assert_allclose(g.means.detach().numpy()[perm], CENTERS, atol=0.15)
    np.testing.assert_allclose(g.weights.numpy()[perm], [0.6, 0.3, 0.1], atol=1e-3)
    np.testing.assert_allclose(g.resp.sum(1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_allclose(g.weights.sum().item(), 1.0, atol=1e-6)


def test_gmm_deterministic():
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.normal(size=(40, 8)), dtype=torch.float32)
    for cov in ("diag", "full"):
        g1 = sot.fit_gmm(x, 4, covariance=cov)
        g2 = sot.fit_gmm(x.clone(), 4, covariance=cov)
        for t1, t2 in zip(g1[:4], g2[:4]):
            assert torch.equal(t1, t2)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_gmm_matches_sklearn(covariance):
    rng = np.random.default_rng(6)
    x, _ = _clusters(rng, CENTERS, [50, 40, 30], 0.3)
    ours = sot.fit_gmm(torch.tensor(x), 3, covariance=covariance, iters=50, var_floor=1e-4)
    sk = GaussianMixture(3, covariance_type=covariance, reg_covar=1e-4, tol=1e-12, max_iter=1000, random_state=0).fit(x)
    perm = _match(ours.means.detach().numpy(), sk.means_)
    np.testing.assert_allclose(ours.means.detach().numpy()[perm], sk.means_, atol=1e-4)
    np.testing.assert_allclose(ours.weights.numpy()[perm], sk.weights_, atol=1e-4)
    np.testing.assert_allclose(ours.covs.detach().numpy()[perm], sk.covariances_, rtol=1e-3, atol=1e-5)


def test_gmm_gradient_flows_and_matches_closed_form():
    torch.manual_seed(1)
    x = torch.randn(12, 5, requires_grad=True)
    g = sot.fit_gmm(x, 3)
    (g.means.sum() + g.covs.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not g.resp.requires_grad and not g.weights.requires_grad

    # With fixed responsibilities, means = R^T x / N_k, so d(sum means)/dx_i = sum_k r_ik / N_k.
    rng = np.random.default_rng(7)
    r = rng.uniform(size=(12, 3))
    r /= r.sum(1, keepdims=True)
    x2 = torch.randn(12, 5, requires_grad=True)
    g2 = sot.fit_gmm(x2, 3, responsibilities=torch.tensor(r))
    g2.means.sum().backward()
    expected = (r / r.sum(0)).sum(1)[:, None] * np.ones((1, 5))
    np.testing.assert_allclose(x2.grad.numpy(), expected, rtol=1e-5)
    ref_means = (r.T @ x2.detach().double().numpy()) / r.sum(0)[:, None]
    np.testing.assert_allclose(g2.means.detach().numpy(), ref_means, rtol=1e-5, atol=1e-6)


def test_gmm_degenerate_inputs():
    # Two distinct points repeated, k=3: a component must end up (nearly) empty.
    x = torch.tensor([[0.0, 1.0]] * 5 + [[1.0, 0.0]] * 5)
    for cov in ("diag", "full"):
        g = sot.fit_gmm(x, 3, covariance=cov)
        for t in (g.weights, g.means, g.covs, g.resp):
            assert torch.isfinite(t).all()
        assert (g.weights > 0).all()
        np.testing.assert_allclose(g.weights.sum().item(), 1.0, atol=1e-6)
    # Explicitly empty component: weight floor, finite mean, floored variance.
    r = torch.zeros(10, 2)
    r[:, 0] = 1.0
    g = sot.fit_gmm(x, 2, responsibilities=r, weight_floor=1e-6)
    assert g.weights[1] == pytest.approx(1e-6, rel=1e-3)
    assert torch.isfinite(g.means).all() and (g.covs >= 1e-4 - 1e-9).all()


def test_gmm_validation_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="k=5"):
        sot.fit_gmm(x, 5)
    with pytest.raises(ValueError):
        sot.fit_gmm(x, 0)
    with pytest.raises(ValueError):
        sot.fit_gmm(torch.randn(4), 1)
    with pytest.raises(ValueError):
        sot.fit_gmm(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), 1)
    with pytest.raises(ValueError):
        sot.fit_gmm(x, 2, covariance="tied")


# ----------------------------------------------------------------------------
# POT loss (Eq. 6)
# ----------------------------------------------------------------------------


def _normed(rng, n, d, shift=0.0):
    z = rng.normal(size=(n, d)) + shift
    return z / np.linalg.norm(z, axis=1, keepdims=True)


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_pot_loss_k1_hand_computed(covariance):
    rng = np.random.default_rng(8)
    zn, zv = _normed(rng, 10, 6), _normed(rng, 10, 6, shift=0.5)
    f = 1e-4
    mn, mv = zn.mean(0), zv.mean(0)
    if covariance == "diag":
        vn, vv = zn.var(0) + f, zv.var(0) + f
        w2 = np.sum((mn - mv) ** 2) + np.sum((np.sqrt(vn) - np.sqrt(vv)) ** 2)
    else:
        sn = np.cov(zn.T, bias=True) + f * np.eye(6)
        sv = np.cov(zv.T, bias=True) + f * np.eye(6)
        w2 = _w2_ref(mn, sn, mv, sv)
    sample = np.mean(np.sum((zn - mv) ** 2, axis=1))
    results = {}
    for term in ("routed", "literal"):
        loss, info = sot.pot_loss(
            torch.tensor(zn), torch.tensor(zv), k=1, eps=0.1, covariance=covariance, sample_term=term
        )
        np.testing.assert_allclose(info["plan"].numpy(), [[1.0]], atol=1e-6)
        np.testing.assert_allclose(info["transport"].item(), w2, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(info["sample"].item(), sample, rtol=1e-5)
        np.testing.assert_allclose(loss.item(), w2 + sample, rtol=1e-5)
        results[term] = loss.item()
    assert results["routed"] == pytest.approx(results["literal"], rel=1e-6)


@pytest.mark.parametrize("covariance", ["diag", "full"])
@pytest.mark.parametrize("term", ["routed", "literal"])
def test_pot_loss_gradients_and_detached_plan(covariance, term):
    rng = np.random.default_rng(9)
    zn = torch.tensor(_normed(rng, 16, 12), dtype=torch.float32, requires_grad=True)
    zv = torch.tensor(_normed(rng, 16, 12, shift=0.3), dtype=torch.float32, requires_grad=True)
    loss, info = sot.pot_loss(zn, zv, k=3, eps=0.05, covariance=covariance, sample_term=term)
    assert loss.ndim == 0 and torch.isfinite(loss)
    for key in ("plan", "cost", "transport", "sample"):
        assert not info[key].requires_grad
    plan = info["plan"].double()
    np.testing.assert_allclose(plan.sum(1).numpy(), info["pi_n"].double().numpy(), atol=1e-5)
    np.testing.assert_allclose(plan.sum(0).numpy(), info["pi_v"].double().numpy(), atol=1e-5)
    np.testing.assert_allclose(loss.item(), info["transport"].item() + info["sample"].item(), rtol=1e-6)
    np.testing.assert_allclose(info["transport"].item(), (plan * info["cost"].double()).sum().item(), rtol=1e-5)
    loss.backward()
    for z in (zn, zv):
        assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_pot_loss_routed_sample_term_by_loops():
    rng = np.random.default_rng(10)
    zn_np, zv_np = _normed(rng, 12, 5), _normed(rng, 12, 5, shift=0.4)
    zn, zv = torch.tensor(zn_np, dtype=torch.float32), torch.tensor(zv_np, dtype=torch.float32)
    _, info = sot.pot_loss(zn, zv, k=2, eps=0.1, sample_term="routed")
    gn = sot.fit_gmm(zn, 2)
    gv = sot.fit_gmm(zv, 2)
    w, mu, plan, pi = (t.detach().double().numpy() for t in (gn.resp, gv.means, info["plan"], gn.weights))
    total = 0.0
    for i in range(12):
        for kn in range(2):
            for kv in range(2):
                total += w[i, kn] * plan[kn, kv] / pi[kn] * np.sum((zn_np[i] - mu[kv]) ** 2)
    np.testing.assert_allclose(info["sample"].item(), total / 12, rtol=1e-5)


def test_pot_loss_validation():
    z = torch.randn(8, 4)
    with pytest.raises(ValueError):
        sot.pot_loss(z, torch.randn(8, 5), k=2, eps=0.1)
    with pytest.raises(ValueError):
        sot.pot_loss(z, z, k=2, eps=0.1, sample_term="other")
    with pytest.raises(ValueError):
        sot.pot_loss(z, z, k=9, eps=0.1)
