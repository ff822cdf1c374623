"""Discriminative contrastive loss (DCL) against label-prompt anchors (paper Eq. 7)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["dcl_loss", "dcl_loss_two_views"]


def _check_inputs(anchors: Tensor, z: Tensor, labels: Tensor, tau: float) -> Tensor:
    for name, t in (("anchors", anchors), ("z", z)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2 or t.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty 2-D (N x D) tensor, got {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
    if anchors.shape != z.shape:
        raise ValueError(f"anchors and z must have the same shape, got {tuple(anchors.shape)} and {tuple(z.shape)}")
    labels = torch.as_tensor(labels, device=z.device)
    if labels.ndim != 1 or labels.shape[0] != z.shape[0]:
        raise ValueError(f"labels must have shape ({z.shape[0]},), got {tuple(labels.shape)}")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError("labels must be binary (values in {0, 1})")
    try:
        tau_f = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"tau must be a positive finite number, got {tau!r}") from None
    if not (tau_f > 0 and math.isfinite(tau_f)):
        raise ValueError(f"tau must be a positive finite number, got {tau!r}")
    return labels.long()


def dcl_loss(anchors: Tensor, z: Tensor, labels: Tensor, tau: float, other_anchors: Tensor | None = None) -> Tensor:
    """InfoNCE-style decoupled contrastive loss of Eq. 7 (cosine similarity).

    ``L = (1/N) sum_i [ -s_ii/tau + log( exp(s_ii/tau) + sum_{j: y_j != y_i} exp(s_ij/tau) ) ]``
    with ``s_ij = cos(t_i, z_j)``: ``anchors[i] = t_i`` is the prompt embedding
    of sample i's own label, ``z`` one modality's embeddings (N x D), and the
    negatives of i are the samples with the other label. Both inputs are
    L2-normalised here, so the loss is scale-invariant.

    A sample without negatives (all labels equal) contributes exactly 0:
    its term is ``-s_ii/tau + log exp(s_ii/tau)``. Returns a scalar.

    ``other_anchors`` (optional, N x D): the prompt of the *other* label for the same image. With
    per-image prompts (Eq. 1) the literal Eq. 7 never compares an image's two class prompts, which is
    exactly what the Eq. 10 decision does; passing them adds ``exp(cos(t̄_i, z_i)/tau)`` to sample i's
    denominator, so the embedding must sit closer to its own label's prompt than to the other one.
    """
    labels = _check_inputs(anchors, z, labels, tau)
    t = F.normalize(anchors, dim=1)
    zz = F.normalize(z, dim=1)
    logits = (t @ zz.T) / float(tau)  # logits[i, j] = sim(t_i, z_j) / tau
    keep = labels[:, None] != labels[None, :]  # negatives: different label (excludes i itself)
    keep = keep | torch.eye(len(labels), dtype=torch.bool, device=z.device)  # plus the positive
    masked = logits.masked_fill(~keep, float("-inf"))
    pos = torch.diagonal(logits)
    if other_anchors is not None:
        if other_anchors.shape != anchors.shape:
            raise ValueError(f"other_anchors must have shape {tuple(anchors.shape)}, got {tuple(other_anchors.shape)}")
        cross = (F.normalize(other_anchors, dim=1) * zz).sum(1, keepdim=True) / float(tau)
        masked = torch.cat([masked, cross], dim=1)
    return (torch.logsumexp(masked, dim=1) - pos).mean()


def dcl_loss_two_views(
    anchors: Tensor, z_v: Tensor, z_n: Tensor, labels: Tensor, tau: float, other_anchors: Tensor | None = None
) -> Tensor:
    """Eq. 7 applied to both modalities (visual ``z_v`` and noise ``z_n``), averaged."""
    return 0.5 * (
        dcl_loss(anchors, z_v, labels, tau, other_anchors) + dcl_loss(anchors, z_n, labels, tau, other_anchors)
    )
