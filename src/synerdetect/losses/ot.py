"""Prototype-level optimal transport between noise and visual embeddings.

Implements the OT part of OT-DCL:

* :func:`fit_gmm` -- a small, deterministic EM fit of a Gaussian mixture on one
  batch of embeddings; its components are the "prototypes" of a modality.
* :func:`gaussian_w2_cost` -- squared 2-Wasserstein distance between Gaussian
  prototypes (paper Eq. 4).
* :func:`sinkhorn` -- log-domain entropic OT solver (paper Eq. 5).
* :func:`pot_loss` -- prototype OT loss with a per-sample term (paper Eq. 6).

Everything runs on the batch in float32 (Sinkhorn internally in float64 since
the plan is a tiny ``K x K`` matrix and small ``eps`` needs the precision).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "GMM",
    "fit_gmm",
    "gaussian_w2_cost",
    "sqrtm_psd",
    "sinkhorn",
    "pot_loss",
]

_COVARIANCES = ("diag", "full")
# Components whose soft count falls below this are treated as empty: their
# mean / covariance are carried over instead of dividing by ~0.
_EMPTY_COUNT = 1e-8


class GMM(NamedTuple):
    """Gaussian mixture fitted on a batch.

    weights: (K,) mixing proportions (strictly positive, sum to 1).
    means:   (K, D).
    covs:    (K, D) variances for ``covariance="diag"``, (K, D, D) for "full".
    resp:    (N, K) responsibilities used for the final M-step (detached).
    covariance: "diag" or "full".
    """

    weights: Tensor
    means: Tensor
    covs: Tensor
    resp: Tensor
    covariance: str


# ----------------------------------------------------------------------------
# validation helpers
# ----------------------------------------------------------------------------


def _check_covariance(covariance: str) -> None:
    if covariance not in _COVARIANCES:
        raise ValueError(f"covariance must be one of {_COVARIANCES}, got {covariance!r}")


def _check_matrix(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N x D), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")


# ----------------------------------------------------------------------------
# GMM (EM)
# ----------------------------------------------------------------------------


def _farthest_point_init(x: Tensor, k: int) -> Tensor:
    """Deterministic k-means++ without randomness: start from the point nearest
    the batch mean, then repeatedly take the point farthest from those chosen
    (argmax picks the first index on ties, so the result is reproducible)."""
    d_center = ((x - x.mean(0, keepdim=True)) ** 2).sum(1)
    idx = [int(torch.argmin(d_center))]
    d_min = ((x - x[idx[0]]) ** 2).sum(1)
    for _ in range(1, k):
        j = int(torch.argmax(d_min))
        idx.append(j)
        d_min = torch.minimum(d_min, ((x - x[j]) ** 2).sum(1))
    return x[idx].clone()


def _global_covs(x: Tensor, k: int, covariance: str, var_floor: float) -> Tensor:
    """Batch covariance (+ floor) replicated K times: a safe starting point and
    the fallback for components that are empty from the start."""
    xc = x - x.mean(0, keepdim=True)
    n, d = x.shape
    if covariance == "diag":
        return ((xc**2).mean(0) + var_floor).expand(k, d).clone()
    cov = xc.T @ xc / n + var_floor * torch.eye(d, dtype=x.dtype, device=x.device)
    return cov.expand(k, d, d).clone()


def _e_step(x: Tensor, weights: Tensor, means: Tensor, covs: Tensor, covariance: str) -> Tensor:
    """Responsibilities (N, K) via log-sum-exp over component log-densities."""
    d = x.shape[1]
    diff = x[None, :, :] - means[:, None, :]  # (K, N, D), direct form avoids fp32 cancellation
    if covariance == "diag":
        maha = (diff**2 / covs[:, None, :]).sum(-1)  # (K, N)
        logdet = torch.log(covs).sum(-1)  # (K,)
    else:
        chol, info = torch.linalg.cholesky_ex(covs)
        if bool((info > 0).any()):
            raise RuntimeError("GMM covariance is not positive definite; increase var_floor")
        y = torch.linalg.solve_triangular(chol, diff.transpose(1, 2), upper=False)  # (K, D, N)
        maha = (y**2).sum(1)
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    log_prob = -0.5 * (maha + logdet[:, None] + d * math.log(2.0 * math.pi))
    log_prob = log_prob + torch.log(weights)[:, None]
    return torch.softmax(log_prob, dim=0).T.contiguous()  # (N, K)


def _m_step(
    x: Tensor,
    resp: Tensor,
    prev_means: Tensor,
    prev_covs: Tensor,
    covariance: str,
    var_floor: float,
    weight_floor: float,
) -> tuple[Tensor, Tensor, Tensor]:
    n, d = x.shape
    nk = resp.sum(0)  # (K,)
    empty = nk < _EMPTY_COUNT
    nk_safe = torch.where(empty, torch.ones_like(nk), nk)

    # Weight floor keeps every prototype strictly positive (Sinkhorn needs a>0).
    weights = (nk / n).clamp_min(weight_floor)
    weights = weights / weights.sum()

    means = (resp.T @ x) / nk_safe[:, None]
    means = torch.where(empty[:, None], prev_means, means)
    diff = x[None, :, :] - means[:, None, :]  # (K, N, D)
    if covariance == "diag":
        covs = torch.einsum("nk,knd->kd", resp, diff**2) / nk_safe[:, None] + var_floor
        covs = torch.where(empty[:, None], prev_covs, covs)
    else:
        covs = torch.einsum("nk,knd,kne->kde", resp, diff, diff) / nk_safe[:, None, None]
        covs = 0.5 * (covs + covs.transpose(1, 2))
        covs = covs + var_floor * torch.eye(d, dtype=x.dtype, device=x.device)
        covs = torch.where(empty[:, None, None], prev_covs, covs)
    return weights, means, covs


def fit_gmm(
    x: Tensor,
    k: int,
    *,
    covariance: str = "diag",
    iters: int = 10,
    var_floor: float = 1e-4,
    responsibilities: Tensor | None = None,
    weight_floor: float = 1e-6,
) -> GMM:
    """Fit a K-component Gaussian mixture to the batch ``x`` (N x D) by EM.

    Prototypes for the OT of paper Eqs. 4-6. Initialisation is deterministic
    (farthest-point from the point nearest the mean), so identical inputs give
    identical fits. ``var_floor`` is *added* to every variance (diag) or as
    ``var_floor * I`` (full), like sklearn's ``reg_covar``; components with no
    mass keep their previous mean/covariance and get ``weight_floor`` weight.

    Differentiability: the ``iters`` EM iterations run under ``no_grad`` to get
    responsibilities; the returned weights/means/covs are then recomputed from
    ``x`` with those (detached) responsibilities, so gradients flow from
    means/covs back to ``x`` (weights and ``resp`` carry no gradient).

    If ``responsibilities`` (N x K) is given, EM is skipped and a single
    M-step with them is returned.
    """
    _check_matrix(x, "x")
    _check_covariance(covariance)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    n, d = x.shape
    if k > n:
        raise ValueError(f"k={k} components cannot be fitted on only N={n} samples (need k <= N)")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an integer >= 1, got {iters!r}")
    if not (var_floor > 0 and math.isfinite(var_floor)):
        raise ValueError(f"var_floor must be a positive finite number, got {var_floor!r}")
    if not (0 < weight_floor < 1.0 / k):
        raise ValueError(f"weight_floor must be in (0, 1/k), got {weight_floor!r}")

    x = x.float()  # EM in fp32; keeps the graph to the caller's tensor
    xd = x.detach()

    if responsibilities is not None:
        r = responsibilities.detach().float().to(x.device)
        if r.shape != (n, k):
            raise ValueError(f"responsibilities must have shape ({n}, {k}), got {tuple(r.shape)}")
        if not bool(torch.isfinite(r).all()) or bool((r < 0).any()):
            raise ValueError("responsibilities must be finite and non-negative")
        row = r.sum(1, keepdim=True)
        if bool((row <= 0).any()):
            raise ValueError("every row of responsibilities must have positive mass")
        resp = r / row
        prev_means = xd.mean(0, keepdim=True).expand(k, d).clone()
        prev_covs = _global_covs(xd, k, covariance, var_floor)
    else:
        with torch.no_grad():
            means = _farthest_point_init(xd, k)
            covs = _global_covs(xd, k, covariance, var_floor)
            weights = torch.full((k,), 1.0 / k, dtype=xd.dtype, device=xd.device)
            for it in range(iters):
                resp = _e_step(xd, weights, means, covs, covariance)
                if it < iters - 1:
                    weights, means, covs = _m_step(xd, resp, means, covs, covariance, var_floor, weight_floor)
        prev_means, prev_covs = means, covs

    # Final M-step with grad: parameters are differentiable functions of x.
    weights, means, covs = _m_step(x, resp, prev_means, prev_covs, covariance, var_floor, weight_floor)
    return GMM(weights.detach(), means, covs, resp.detach(), covariance)


# ----------------------------------------------------------------------------
# Gaussian W2 (Eq. 4)
# ----------------------------------------------------------------------------


class _SqrtmPSD(torch.autograd.Function):
    """Symmetric PSD square root via ``eigh`` (eigenvalues clamped at 0).

    The backward solves the Sylvester equation ``S X + X S = G`` in the
    eigenbasis, dividing by ``s_i + s_j`` instead of ``lambda_i - lambda_j``
    as autograd-through-``eigh`` would; that stays finite for the repeated
    eigenvalues that floored, rank-deficient batch covariances always have.
    """

    @staticmethod
    def forward(ctx, a: Tensor) -> Tensor:
        a = 0.5 * (a + a.transpose(-1, -2))
        lam, v = torch.linalg.eigh(a)
        s = lam.clamp_min(0).sqrt()
        ctx.save_for_backward(v, s)
        return (v * s.unsqueeze(-2)) @ v.transpose(-1, -2)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> Tensor:
        v, s = ctx.saved_tensors
        g = 0.5 * (grad + grad.transpose(-1, -2))  # forward symmetrises its input
        gt = v.transpose(-1, -2) @ g @ v
        denom = s.unsqueeze(-1) + s.unsqueeze(-2)
        # Both eigenvalues exactly 0: derivative is unbounded; use 0 (subgradient).
        xt = torch.where(denom > 0, gt / torch.where(denom > 0, denom, torch.ones_like(denom)), 0.0)
        return v @ xt @ v.transpose(-1, -2)


def sqrtm_psd(a: Tensor) -> Tensor:
    """Principal square root of symmetric PSD matrices (..., D, D), differentiable."""
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"sqrtm_psd expects (..., D, D) matrices, got shape {tuple(a.shape)}")
    return _SqrtmPSD.apply(a)


def gaussian_w2_cost(
    means_a: Tensor,
    covs_a: Tensor,
    means_b: Tensor,
    covs_b: Tensor,
    covariance: str = "diag",
) -> Tensor:
    """Squared 2-Wasserstein cost matrix (Ka x Kb) between Gaussians (Eq. 4).

    ``C = ||mu_a - mu_b||^2 + Tr(Sa + Sb - 2 (Sa^{1/2} Sb Sa^{1/2})^{1/2})``.
    For ``covariance="diag"`` (covs are variances, K x D) this is exactly
    ``||mu_a - mu_b||^2 + ||sigma_a - sigma_b||^2``. Computed in the inputs'
    floating dtype; differentiable w.r.t. all inputs.
    """
    _check_covariance(covariance)
    for name, m in (("means_a", means_a), ("means_b", means_b)):
        _check_matrix(m, name)
    ka, d = means_a.shape
    kb = means_b.shape[0]
    if means_b.shape[1] != d:
        raise ValueError(f"means dimension mismatch: {d} vs {means_b.shape[1]}")
    want_a = (ka, d) if covariance == "diag" else (ka, d, d)
    want_b = (kb, d) if covariance == "diag" else (kb, d, d)
    if tuple(covs_a.shape) != want_a or tuple(covs_b.shape) != want_b:
        raise ValueError(
            f"{covariance} covs must have shapes {want_a} and {want_b}, "
            f"got {tuple(covs_a.shape)} and {tuple(covs_b.shape)}"
        )

    mean_term = ((means_a[:, None, :] - means_b[None, :, :]) ** 2).sum(-1)
    if covariance == "diag":
        # clamp_min keeps sqrt's gradient finite for (invalid) zero variances.
        tiny = torch.finfo(covs_a.dtype).tiny
        sa = covs_a.clamp_min(tiny).sqrt()
        sb = covs_b.clamp_min(tiny).sqrt()
        return mean_term + ((sa[:, None, :] - sb[None, :, :]) ** 2).sum(-1)

    root_a = sqrtm_psd(covs_a)  # (Ka, D, D)
    cross = root_a[:, None] @ covs_b[None, :] @ root_a[:, None]  # (Ka, Kb, D, D)
    tr_cross = torch.diagonal(sqrtm_psd(cross), dim1=-2, dim2=-1).sum(-1)
    tr_a = torch.diagonal(covs_a, dim1=-2, dim2=-1).sum(-1)
    tr_b = torch.diagonal(covs_b, dim1=-2, dim2=-1).sum(-1)
    bures = tr_a[:, None] + tr_b[None, :] - 2.0 * tr_cross
    # Round-off can make the (true >= 0) Bures term slightly negative.
    return mean_term + bures.clamp_min(0)


# ----------------------------------------------------------------------------
# Sinkhorn (Eq. 5)
# ----------------------------------------------------------------------------


def _check_marginal(p: Tensor, name: str, size: int) -> Tensor:
    if not isinstance(p, Tensor):
        p = torch.as_tensor(p)
    if p.ndim != 1 or p.shape[0] != size:
        raise ValueError(f"{name} must have shape ({size},), got {tuple(p.shape)}")
    p = p.detach().double()
    if not bool(torch.isfinite(p).all()) or bool((p <= 0).any()):
        raise ValueError(f"{name} must be finite and strictly positive")
    total = float(p.sum())
    if abs(total - 1.0) > 1e-3:
        raise ValueError(f"{name} must sum to 1, sums to {total:.6g}")
    return p / p.sum()  # absorb tiny numerical drift


def sinkhorn(
    cost: Tensor,
    a: Tensor,
    b: Tensor,
    eps: float,
    *,
    iters: int = 200,
    tol: float = 1e-6,
) -> Tensor:
    """Entropic OT plan (Eq. 5): ``min <T,C> + eps sum T log T``, ``T1=a, T^T1=b``.

    Log-domain Sinkhorn on dual potentials (log-sum-exp updates), stable for
    small ``eps``; stops when the L1 row-marginal error < ``tol``. Runs in
    float64 without grad (the plan is used as a constant, envelope theorem)
    and returns a detached float32 plan (Ka x Kb).
    """
    if not isinstance(cost, Tensor) or cost.ndim != 2:
        raise ValueError("cost must be a 2-D tensor")
    if not bool(torch.isfinite(cost).all()):
        raise ValueError("cost contains NaN or Inf")
    if not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a positive finite number, got {eps!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an integer >= 1, got {iters!r}")
    ka, kb = cost.shape
    a = _check_marginal(a, "a", ka).to(cost.device)
    b = _check_marginal(b, "b", kb).to(cost.device)

    with torch.no_grad():
        c = cost.detach().double()
        log_a, log_b = a.log(), b.log()
        f = torch.zeros(ka, dtype=c.dtype, device=c.device)
        g = torch.zeros(kb, dtype=c.dtype, device=c.device)
        for it in range(iters):
            f = eps * (log_a - torch.logsumexp((g[None, :] - c) / eps, dim=1))
            g = eps * (log_b - torch.logsumexp((f[:, None] - c) / eps, dim=0))
            # Check every few iterations only (each check is a host sync on GPU).
            # After the g-update columns are exact; rows measure convergence.
            if it % 10 == 9 or it == iters - 1:
                plan = torch.exp((f[:, None] + g[None, :] - c) / eps)
                if float((plan.sum(1) - a).abs().sum()) < tol:
                    break
    return plan.float()


# ----------------------------------------------------------------------------
# POT loss (Eq. 6)
# ----------------------------------------------------------------------------


def pot_loss(
    z_n: Tensor,
    z_v: Tensor,
    *,
    k: int,
    eps: float,
    covariance: str = "diag",
    sample_term: str = "routed",
    em_iters: int = 10,
    sinkhorn_iters: int = 200,
    var_floor: float = 1e-4,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Prototype OT loss between noise (``z_n``) and visual (``z_v``) embeddings (Eq. 6).

    GMMs with ``k`` components are fitted on each batch; ``C`` is the Gaussian
    W2 cost between noise and visual prototypes (Eq. 4); the plan
    ``T* = sinkhorn(C, pi^n, pi^v, eps)`` (Eq. 5) is a constant (envelope
    theorem). ``loss = sum T* C + sample term`` with

    * ``"literal"``: ``(1/N) sum_i sum_k w_i^n(k) ||z_n^i - mu_k^v||^2``
      (pairs noise component k with visual component k by index);
    * ``"routed"`` (default): ``(1/N) sum_i sum_kn w_i^n(kn) sum_kv
      [T*(kn,kv)/pi^n(kn)] ||z_n^i - mu_kv^v||^2`` (each noise sample is routed
      to visual prototypes through the plan).

    Inputs are expected already L2-normalised (not renormalised here).
    Returns ``(loss, info)``; ``info`` holds detached "plan", "cost",
    "transport", "sample", "pi_n", "pi_v". Gradients reach both inputs via
    prototype means/covariances.
    """
    _check_matrix(z_n, "z_n")
    _check_matrix(z_v, "z_v")
    if z_n.shape[1] != z_v.shape[1]:
        raise ValueError(f"z_n and z_v must share D, got {z_n.shape[1]} and {z_v.shape[1]}")
    if sample_term not in ("routed", "literal"):
        raise ValueError(f"sample_term must be 'routed' or 'literal', got {sample_term!r}")

    gmm_n = fit_gmm(z_n, k, covariance=covariance, iters=em_iters, var_floor=var_floor)
    gmm_v = fit_gmm(z_v, k, covariance=covariance, iters=em_iters, var_floor=var_floor)

    cost = gaussian_w2_cost(gmm_n.means, gmm_n.covs, gmm_v.means, gmm_v.covs, covariance)
    plan = sinkhorn(cost.detach(), gmm_n.weights, gmm_v.weights, eps, iters=sinkhorn_iters)
    plan = plan.to(cost.dtype).detach()
    transport = (plan * cost).sum()

    zn = z_n.float()
    dist = ((zn[:, None, :] - gmm_v.means[None, :, :]) ** 2).sum(-1)  # (N, Kv)
    if sample_term == "literal":
        weights = gmm_n.resp
    else:
        routing = plan / gmm_n.weights[:, None]  # rows sum to 1 (plan rows = pi^n)
        weights = gmm_n.resp @ routing  # (N, Kv)
    sample = (weights * dist).sum(1).mean()

    loss = transport + sample
    info = {
        "plan": plan,
        "cost": cost.detach(),
        "transport": transport.detach(),
        "sample": sample.detach(),
        "pi_n": gmm_n.weights.detach(),
        "pi_v": gmm_v.weights.detach(),
    }
    return loss, info
