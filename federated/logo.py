"""LoGo: Kim et al., "Re-thinking Federated Active Learning based on Inter-class Diversity" (CVPR 2023).

Macro step: the client trains a LOCAL-ONLY model (fresh weights, the same for every client of a cycle,
trained on the client's own labelled images alone until 99 % training accuracy or 50 epochs, never the
federated weights) and clusters its unlabelled images by that model's gradient embedding for its
predicted class ((p_y - 1) h, h the penultimate features: BADGE's embedding restricted to the predicted
class, as the reference's get_grad_embedding_maxInd), k-means with k = the client's budget and
k-means++ restarts. Micro step: in each cluster, the image the global model is least sure of (entropy);
more rounds over the clusters, in the same order, fill the budget when clusters are too few.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn

from common.datasets import DatasetSpec
from common.errors import UserError
from common.schedule import Schedule
from common.seeding import torch_global_seed, torch_seed
from common.strategies.base import top_scores
from common.train import Images, predict_logits, train_model

# The reference's local-only training: SGD lr 0.01, momentum 0.9, weight decay 1e-5, batch 64, at most
# 50 epochs, stopped once the training accuracy reaches 99 % (docs/method.md lists what differs).
LOCAL_ONLY_SCHEDULE = Schedule(lr=0.01, momentum=0.9, batch_size=64, epochs=50, milestones=(), weight_decay=1e-5)
STOP_ACCURACY = 0.99
KMEANS_RESTARTS = 10  # scikit-learn's k-means++ restarts (the reference's scikit-learn 1.0 default)


def local_only_model(spec: DatasetSpec, images: Images, labels: torch.Tensor, seed: int, cycle: int, client: int,
                     device: torch.device, schedule: Schedule = LOCAL_ONLY_SCHEDULE) -> nn.Module:
    """A model trained from fresh weights (seeded by the run and the cycle only, so every client of a cycle
    starts from the same ones) on the client's labelled images alone, until STOP_ACCURACY on them."""
    with torch_global_seed(torch_seed(seed, "logo-local-init", cycle)):
        model = spec.model(spec.num_classes, False)
    if len(labels) == 0:
        return model

    def accurate_enough(_epoch: int) -> bool:
        predicted = predict_logits(model, images, spec.normalise, device).argmax(dim=1)
        return (predicted == labels).float().mean().item() >= STOP_ACCURACY

    train_model(model, images, labels, schedule, spec.normalise, torch_seed(seed, "logo-local-train", cycle, client),
                device, on_epoch_end=accurate_enough)
    return model.cpu()


def predicted_class_embeddings(scales: np.ndarray, features: np.ndarray) -> np.ndarray:
    """(p_y - 1) h [U, D]: BADGE's gradient embedding (factors `scales` p - onehot(y) [U, C] and `features`
    h [U, D], common.strategies.diversity) restricted to the predicted class y."""
    predicted = np.argmin(scales, axis=1)  # p - onehot(y) is negative only at the predicted class
    return scales[np.arange(len(scales)), predicted][:, None] * features


def logo_select(embeddings: np.ndarray, global_entropy: np.ndarray, budget: int, rng: np.random.Generator,
                ) -> np.ndarray:
    """Exactly `budget` distinct rows [budget]: k-means (k = budget, KMEANS_RESTARTS k-means++ starts) on
    `embeddings` [U, D], then the highest-global-entropy row of each cluster (clusters in the order of those
    rows' entropies), then the next row of each cluster in the same order, and so on, until the budget is
    filled (clusters can be fewer than k when images coincide). Entropy ties break by a seeded coin."""
    global_entropy = np.asarray(global_entropy, dtype=np.float64)
    if not 0 <= budget <= len(global_entropy):
        raise UserError(f"LoGo budget must be between 0 and the {len(global_entropy)} unlabelled images, got {budget}")
    if budget == 0:
        return np.empty(0, dtype=np.int64)
    seed = int(rng.integers(2**31 - 1))
    assignment = KMeans(n_clusters=budget, n_init=KMEANS_RESTARTS, random_state=seed).fit_predict(
        np.asarray(embeddings, dtype=np.float64))
    ranked = top_scores(global_entropy, len(global_entropy), rng)  # every row, most uncertain first
    rank_in_cluster = np.empty(len(ranked), dtype=np.int64)
    for cluster in np.unique(assignment):
        rows = ranked[assignment[ranked] == cluster]
        rank_in_cluster[rows] = np.arange(len(rows))
    position = np.empty(len(ranked), dtype=np.int64)
    position[ranked] = np.arange(len(ranked))
    head_position = {c: position[ranked[assignment[ranked] == c][0]] for c in np.unique(assignment)}
    cluster_order = np.array([head_position[c] for c in assignment])
    order = np.lexsort((cluster_order, rank_in_cluster))  # round r over the clusters, clusters by head entropy
    return order[:budget].astype(np.int64)
