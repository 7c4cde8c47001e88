"""KAFAL: Cao et al., "Knowledge-Aware Federated Active Learning with Non-IID Data" (ICCV 2023).

Pure torch pieces, the client's labelled class counts n [C] as the prior:
- KSAS, the acquisition score: the symmetric KL between the local and the global model's
  predictions once both are specialised to the client by adding log n to their logits.
- KCFU, the client's training loss: balanced-softmax cross-entropy CE(f(x) + log n, y), plus
  from the second cycle on a compensatory term that pulls the local model towards the global
  one on mixed-up unlabelled images, weighted towards the classes the client has few labels of.
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


def inverse_frequency_weights(counts: torch.Tensor, eps: float = COUNT_FLOOR) -> torch.Tensor:
    """(sum n / n_c) normalised to sum to 1 over the classes [C] (counts floored at `eps`)."""
    inverse = 1.0 / torch.clamp(torch.as_tensor(counts, dtype=torch.float64), min=eps)
    return inverse / inverse.sum()  # the factor sum n cancels in the normalisation


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


def compensatory_loss(local_logits: torch.Tensor, global_logits: torch.Tensor, counts: torch.Tensor,
                      eps: float = COUNT_FLOOR) -> torch.Tensor:
    """Mean over mixed images of w[argmax global] * KL(p_global || p_local) [scalar].

    Logits [N, C] of both models on the same mixed batch, plain softmax (the balanced-softmax-
    trained f is the class-balanced predictor); the global model is the teacher (no gradient);
    w = inverse_frequency_weights(counts).
    """
    log_global = F.log_softmax(global_logits.detach(), dim=1)
    log_local = F.log_softmax(local_logits, dim=1)
    divergence = (log_global.exp() * (log_global - log_local)).sum(dim=1)  # [N]
    weights = inverse_frequency_weights(counts, eps).to(local_logits)[global_logits.argmax(dim=1)]
    return (weights * divergence).mean()


def kcfu_loss(local_logits_labelled: torch.Tensor, labels: torch.Tensor, counts: torch.Tensor,
              local_logits_mixed: torch.Tensor | None = None, global_logits_mixed: torch.Tensor | None = None,
              eps: float = COUNT_FLOOR) -> torch.Tensor:
    """KCFU client loss: balanced-softmax CE, plus the compensatory term when the mixed logits are given
    (from the second cycle on, when a global model exists)."""
    if (local_logits_mixed is None) != (global_logits_mixed is None):
        raise ValueError("kcfu_loss needs both the local and the global logits of the mixed batch, or neither")
    loss = balanced_softmax_ce(local_logits_labelled, labels, counts, eps)
    if local_logits_mixed is not None:
        loss = loss + compensatory_loss(local_logits_mixed, global_logits_mixed, counts, eps)
    return loss
