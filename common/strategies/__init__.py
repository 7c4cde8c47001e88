"""Acquisition strategies, registered by CLI name in STRATEGIES (one module per family)."""
# Import order is the order `run.py --help` lists the methods in.
from common.strategies import uncertainty, mc_dropout, diversity, vaal, fisher, low_budget, imbalance  # noqa: F401,I001  (registration)
from common.strategies.base import STRATEGIES, AcquisitionOptions, AcquisitionState, Strategy

__all__ = ["STRATEGIES", "AcquisitionOptions", "AcquisitionState", "Strategy"]
