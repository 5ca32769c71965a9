"""The Make.Girls.Moe objective: lambda_adv x adversarial (BCE) + tag classification (BCE,
summed over tags: on real images for D, on generated ones for G) + lambda_gp x the DRAGAN
gradient penalty on perturbed real images."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tasks.params.train import LossConfig


def _wide(dtype: torch.dtype) -> torch.dtype:
    """float32 for reduced precision, else the dtype itself (float64 stays float64)."""
    return torch.promote_types(dtype, torch.float32)


def perturb(x: torch.Tensor, u: torch.Tensor, scale: float) -> torch.Tensor:
    """DRAGAN's perturbed real images: x + scale * U(0,1) * std(x) (`u` is the U(0,1) draw)."""
    return x + scale * u * x.to(_wide(x.dtype)).std().to(x.dtype)


def gradient_penalty(D, x: torch.Tensor, u: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """mean (||grad_x D(x_p)|| - 1)^2 at x_p = perturb(x); differentiable w.r.t. D's weights.
    Returns (penalty, per-sample gradient norms)."""
    xp = perturb(x.detach(), u, scale).requires_grad_(True)
    logit, _ = D(xp)
    (grad,) = torch.autograd.grad(logit.float().sum(), xp, create_graph=True)
    norm = grad.to(_wide(grad.dtype)).flatten(1).norm(dim=1)
    return (norm - 1).square().mean(), norm


def tag_bce(logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """BCE summed over tags, mean over the batch; `known` (0/1) masks tags the tagger could not say."""
    per = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
    if known is not None:
        per = per * known
    return per.sum(1).mean()


def tag_accuracy(logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    hit = ((logits.detach() > 0) == (target > 0.5)).float()
    if known is None:
        return hit.mean()
    return (hit * known).sum() / known.sum().clamp_min(1)


def discriminator_loss(D, real, fake, tags, known, u, cfg: LossConfig, D_gp=None):
    """D's loss on a batch and a dict of detached device tensors for the metrics (no sync)."""
    real_logit, real_cls = D(real)
    fake_logit, _ = D(fake.detach())
    real_logit, fake_logit = real_logit.float(), fake_logit.float()
    adv = (F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
           + F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit)))
    cls = tag_bce(real_cls, tags, known)
    if cfg.lambda_gp > 0:
        gp, _ = gradient_penalty(D_gp if D_gp is not None else D, real, u, cfg.gp_perturb)
    else:
        gp = adv.new_zeros(())
    total = cfg.lambda_adv * adv + cfg.lambda_cls * cls + cfg.lambda_gp * gp
    parts = {"loss_d": total, "adv_d": adv, "cls_real": cls, "gp": gp,
             "acc_real": tag_accuracy(real_cls, tags, known),
             "d_real": torch.sigmoid(real_logit).mean(), "d_fake": torch.sigmoid(fake_logit).mean()}
    return total, {k: v.detach() for k, v in parts.items()}


def generator_loss(D, fake, cond, cfg: LossConfig, tag_mask: torch.Tensor | None = None):
    """G's loss; `tag_mask` (n_tags,) 0/1 keeps the tag loss to the tags the data knows: D's tag
    head never learns a tag that is unknown (-1) for every face, so its verdict there is noise."""
    logit, cls_logits = D(fake)
    logit = logit.float()
    adv = F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
    known = None if tag_mask is None else tag_mask.expand_as(cond)
    cls = tag_bce(cls_logits, cond, known)
    total = cfg.lambda_adv * adv + cfg.lambda_cls * cls
    parts = {"loss_g": total, "adv_g": adv, "cls_fake": cls, "acc_fake": tag_accuracy(cls_logits, cond, known)}
    return total, {k: v.detach() for k, v in parts.items()}
