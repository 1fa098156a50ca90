"""The three losses of AcuSim's example network, in the form the seed paper reports them.

- visibility: RMSE between sigmoid(logit) and the 0/1 visibility target, over every point;
- classification: cross-entropy of each visible point's logits (over the points of its meridian)
  against its index within the meridian;
- coordinates: soft-wing on |prediction − target| of normalised x and y, over visible points.

The soft-wing is the example's (omega 1, epsilon 0.01, theta 1: omega·ln(1 + |d|/epsilon) below
theta). Above theta (an error of a whole image width) the example jumps from 4.6 to 99; here the
curve continues along its tangent, so the loss stays continuous. Below theta the two are equal,
which is where every prediction inside the image lies.
"""
import math

import torch
import torch.nn.functional as F


def soft_wing(delta, omega=1.0, epsilon=0.01, theta=1.0):
    d = delta.abs()
    small = omega * torch.log1p(d / epsilon)
    large = omega * math.log1p(theta / epsilon) + omega / (epsilon + theta) * (d - theta)
    return torch.where(d < theta, small, large)


def visibility_rmse(logits, visible):
    """sqrt(mean((sigmoid(logits) - visible)²)) over all points of all images."""
    return torch.sqrt(F.mse_loss(torch.sigmoid(logits), visible) + 1e-12)


def coordinate_loss(pred, target, visible, **wing):
    """Mean soft-wing over the x and y of visible points ([B, P, 2] predictions and targets)."""
    per = soft_wing(pred - target, **wing) * visible.unsqueeze(-1)
    return per.sum() / (2.0 * visible.sum()).clamp(min=1.0)


def classification_targets(table):
    """Per group, the target class of each of its points: its index within the group (0..k-1)."""
    return [torch.arange(len(m), dtype=torch.long) for m in table.members]


def classification_loss(cls_logits, visible, table):
    """Mean cross-entropy over visible points; `cls_logits[g]` is [B, k_g, k_g]."""
    total = cls_logits[0].new_zeros(())
    count = visible.sum().clamp(min=1.0)
    for g, (logits, target) in enumerate(zip(cls_logits, classification_targets(table))):
        b, k, _ = logits.shape
        ce = F.cross_entropy(logits.reshape(b * k, k), target.to(logits.device).repeat(b), reduction="none").reshape(b, k)
        total = total + (ce * visible[:, list(table.members[g])]).sum()
    return total / count


def classification_hits(cls_logits, visible, table):
    """Per image, the visible points whose class is predicted right ([B])."""
    hits = visible.new_zeros(visible.shape[0])
    for g, (logits, target) in enumerate(zip(cls_logits, classification_targets(table))):
        hit = (logits.argmax(-1) == target.to(logits.device)).float()
        hits = hits + (hit * visible[:, list(table.members[g])]).sum(1)
    return hits


def classification_correct(cls_logits, visible, table):
    """(correct, counted) over visible points."""
    return float(classification_hits(cls_logits, visible, table).sum()), float(visible.sum())
