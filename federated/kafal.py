"""KAFAL: Cao et al., "Knowledge-Aware Federated Active Learning with Non-IID Data" (ICCV 2023).

Pure torch pieces, the client's labelled class counts n [C] as the prior:
- KSAS, the acquisition score: the symmetric KL between the local and the global model's
  predictions once both are specialised to the client by adding log n to their logits.
- KCFU, the client's training loss: balanced-softmax cross-entropy CE(f(x) + log n, y), plus
  from the second round of every cycle on a compensatory term that pulls the local model towards
  the global model of the round's start on mixed-up unlabelled images: KL(p_global || p_local)
  averaged over the classes, weighted by r_c = (1 / n_c) normalised over the classes the client has
  labels of (r_c = 0 for a class it has none of: weak classes are compensated, absent ones are not),
  a mixed image's weight being the lambda-mix of r at the global model's predicted classes of the
  image and of its partner (KAFAL's reference code, ycao5602/KAFAL main.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

COUNT_FLOOR = 1e-3  # an absent class counts as 1e-3 images: log n stays finite, its prior very low


def class_count_prior(counts: torch.Tensor, eps: float = COUNT_FLOOR) -> torch.Tensor:
    """log n_c [C] with the counts floored at `eps`, so an absent class is never log 0."""
    return torch.log(torch.clamp(torch.as_tensor(counts, dtype=torch.float64), min=eps))


def _specialised_log_probs(logits: torch.Tensor, counts: torch.Tensor, eps: float) -> torch.Tensor:
    """log softmax(logits + log n) [N, C]: the prediction specialised to the client's class mix."""
    return F.log_softmax(logits + class_count_prior(counts, eps).to(logits), dim=1)


def ksas_scores(local_logits: torch.Tensor, global_logits: torch.Tensor, counts: torch.Tensor,
                eps: float = COUNT_FLOOR) -> torch.Tensor:
    """KSAS [N]: 1/2 [KL(p_g || p_l) + KL(p_l || p_g)] of the specialised predictions [N, C].

    The two KLs sum to sum_c (p_g - p_l)(log p_g - log p_l): each term is >= 0, and swapping
    local and global gives bit-identical scores.
    """
    log_local = _specialised_log_probs(local_logits, counts, eps)
    log_global = _specialised_log_probs(global_logits, counts, eps)
    return 0.5 * ((log_global.exp() - log_local.exp()) * (log_global - log_local)).sum(dim=1)


def balanced_softmax_ce(logits: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor,
                        eps: float = COUNT_FLOOR) -> torch.Tensor:
    """Mean CE(logits + log n, y) over the labelled batch (balanced softmax)."""
    return F.cross_entropy(logits + class_count_prior(counts, eps).to(logits), labels)


def inverse_frequency_weights(counts: torch.Tensor) -> torch.Tensor:
    """r_c = (sum n / n_c) normalised to sum to 1 over the classes with n_c > 0, and 0 for a class with no
    labelled image [C] (all zeros when the client has no labels)."""
    counts = torch.as_tensor(counts, dtype=torch.float64)
    present = counts > 0
    inverse = torch.where(present, 1.0 / torch.where(present, counts, torch.ones_like(counts)), torch.zeros_like(counts))
    total = inverse.sum()
    return inverse / total if total > 0 else inverse  # the factor sum n cancels in the normalisation


@dataclass(frozen=True)
class MixedBatch:
    """Unlabelled images mixed up pairwise: inputs = lam x + (1 - lam) x[partner]."""

    inputs: torch.Tensor  # [N, ...]
    lam: torch.Tensor  # [N] one mixing coefficient per image, ~ Beta(2, 2)
    partner: torch.Tensor  # [N] int64 index of each image's partner (another image when N > 1)


def mixup(inputs: torch.Tensor, lam: torch.Tensor, partner: torch.Tensor) -> MixedBatch:
    """lam_i x_i + (1 - lam_i) x_partner_i for every image (lam [N], partner [N] given)."""
    weight = lam.to(inputs.dtype).view((len(inputs),) + (1,) * (inputs.dim() - 1))
    return MixedBatch(inputs=weight * inputs + (1.0 - weight) * inputs[partner], lam=lam, partner=partner)


def mix_unlabelled(inputs: torch.Tensor, generator: torch.Generator) -> MixedBatch:
    """Mix every image with a partner, lam ~ Beta(2, 2) per image, both drawn from `generator`.

    Partners follow one seeded random cycle through the batch (image perm[j] mixes with
    perm[j+1]), so no image is its own partner when N > 1. Beta(2, 2) is drawn as the median of
    three uniforms (its order-statistic form), which a torch.Generator can seed.
    """
    count = len(inputs)
    order = torch.randperm(count, generator=generator, device=inputs.device)
    partner = torch.empty_like(order)
    partner[order] = order.roll(-1)
    lam = torch.rand(count, 3, generator=generator, device=inputs.device).median(dim=1).values
    return mixup(inputs, lam, partner)


def mixed_weights(class_weights: torch.Tensor, predicted: torch.Tensor, mixed: MixedBatch) -> torch.Tensor:
    """w_i = lam_i r[y_i] + (1 - lam_i) r[y_partner(i)] [N]: `predicted` [N] are the global model's classes
    of the mixed images (KAFAL takes the partner's class as predicted on the partner's own mixed image)."""
    lam = mixed.lam.to(class_weights.dtype)
    return lam * class_weights[predicted] + (1.0 - lam) * class_weights[predicted[mixed.partner]]


def compensatory_loss(local_logits: torch.Tensor, global_logits: torch.Tensor, counts: torch.Tensor,
                      mixed: MixedBatch) -> torch.Tensor:
    """Mean over mixed images of w_i * (1/C) sum_c p_global,c (log p_global,c - log p_local,c) [scalar].

    Logits [N, C] of both models on the same mixed batch, plain softmax (the balanced-softmax-
    trained f is the class-balanced predictor); the global model is the teacher (no gradient);
    w_i = mixed_weights(inverse_frequency_weights(counts), argmax global, mixed).
    """
    log_global = F.log_softmax(global_logits.detach(), dim=1)
    log_local = F.log_softmax(local_logits, dim=1)
    divergence = (log_global.exp() * (log_global - log_local)).mean(dim=1)  # [N], averaged over classes
    weights = mixed_weights(inverse_frequency_weights(counts).to(local_logits.device),
                            global_logits.argmax(dim=1), mixed).to(local_logits)
    return (weights * divergence).mean()


def kcfu_loss(local_logits_labelled: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor,
              local_logits_mixed: torch.Tensor | None = None, global_logits_mixed: torch.Tensor | None = None,
              mixed: MixedBatch | None = None, eps: float = COUNT_FLOOR) -> torch.Tensor:
    """KCFU client loss: balanced-softmax CE, plus the compensatory term when the mixed batch and both
    models' logits on it are given (from the second round of a cycle on)."""
    if (local_logits_mixed is None) != (global_logits_mixed is None) or (local_logits_mixed is None) != (mixed is None):
        raise ValueError("kcfu_loss needs the mixed batch and both models' logits on it, or none of them")
    loss = balanced_softmax_ce(local_logits_labelled, labels, counts, eps)
    if local_logits_mixed is not None:
        loss = loss + compensatory_loss(local_logits_mixed, global_logits_mixed, counts, mixed)
    return loss
