"""Fisher-kernel acquisition (Gudovskiy et al., "Deep Active Learning for Biased Datasets via
Fisher Kernel Self-Supervision", CVPR 2020): descriptors (stage 2) then matching (stage 3).

Variants differ only in the pool pseudo-label s used for g(x, s), or in using z alone.
With --ensemble the first model describes the images.
"""
from __future__ import annotations

import numpy as np
import torch

from common.gen_descr import DescriptorStore, Reference, compute_descriptors, images_layout, validation_descriptors
from common.main_descr import fisher_kernel_acquire, miss_set
from common.strategies.base import STRATEGIES, AcquisitionState, Strategy
from common.validation_folds import HeldOutFolds


class FisherKernelStrategy(Strategy):
    """Match the unlabelled pool to the centres of the misclassified validation images.

    pseudo_label: None for features only (paper R_z), else a key of gen_descr.PSEUDO_LABELS.
    held_out_folds: also train on the validation set, all but a held-out fold whose misses are read
    (state.validation is then that fold; see common/validation_folds.py).
    """

    uses_validation_labels = True

    def __init__(self, pseudo_label: str | None, held_out_folds: HeldOutFolds | None = None) -> None:
        self.pseudo_label = pseudo_label
        self.held_out_folds = held_out_folds
        self.run_settings = ("descriptor_layers", "top_k") + (("val_folds",) if held_out_folds else ())

    def select(self, state: AcquisitionState) -> np.ndarray:
        store = DescriptorStore(state.options.descriptor_store, state.scratch)
        try:
            return self._select(state, store)
        finally:
            store.release()

    def _select(self, state: AcquisitionState, store: DescriptorStore) -> np.ndarray:
        model, options = state.models[0], state.options
        layout = images_layout(model, options.descriptor_layers, state.validation.images, state.to_input,
                               options.device)
        with_gradients = self.pseudo_label is not None

        val = validation_descriptors(
            model, state.validation, state.to_input, layout, options.device, with_gradients,
            batch_size=options.batch_size, progress=options.progress, store=store,
        )
        reference = Reference(val.z, val.g, state.validation.labels.numpy()) if with_gradients else None
        pool = compute_descriptors(
            model, state.unlabelled_images(), state.to_input, layout, options.device,
            pseudo_label=self.pseudo_label, reference=reference,
            true_labels=state.pool.labels[torch.from_numpy(state.unlabelled)],
            batch_size=options.batch_size, progress=options.progress, description="pool descriptors",
            perturbation=options.perturbation, seed=state.seed, store=store, keep_logits=False,
        )
        misses = miss_set(val.logits, state.validation.labels.numpy(), fallback_size=state.budget)
        rows = fisher_kernel_acquire(
            val.vectors(with_gradients), misses, pool.vectors(with_gradients), state.budget, options.top_k, state.rng,
            search_settings=options.search, report=state.notes,
        )
        return state.unlabelled[rows]


STRATEGIES.register("fk-features", FisherKernelStrategy(pseudo_label=None))
STRATEGIES.register("fk-pred", FisherKernelStrategy(pseudo_label="pred"))
STRATEGIES.register("fk-nn", FisherKernelStrategy(pseudo_label="nn"))
STRATEGIES.register("fk-nn-split", FisherKernelStrategy(pseudo_label="nn", held_out_folds=HeldOutFolds(rotate=False)))
STRATEGIES.register("fk-nn-kfold", FisherKernelStrategy(pseudo_label="nn", held_out_folds=HeldOutFolds(rotate=True)))
STRATEGIES.register("fk-nn-grad", FisherKernelStrategy(pseudo_label="nn-grad"))
STRATEGIES.register("fk-oracle", FisherKernelStrategy(pseudo_label="true"))
STRATEGIES.register("fk-cov", FisherKernelStrategy(pseudo_label="cov"))
STRATEGIES.register("fk-mi", FisherKernelStrategy(pseudo_label="mi"))
