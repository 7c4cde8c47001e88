"""What a method name stands for, for code that must not load the strategies (reports and plots read
results without torch): which name is the all-train reference line, and which methods' acquisitions
read the labelled validation set. The strategies themselves say the same through
`Strategy.uses_validation_labels`; tests/test_reporting.py checks that both agree for every registered
method, central and federated.
"""
from __future__ import annotations

# The reference line: the whole pool labelled, trained once. Not an active-learning method: no
# acquisition, no budget, one record; plots draw it as a horizontal line, tables leave it out.
ALL_TRAIN = "all-train"

# Methods whose acquisition reads the labelled validation set (a labelling cost): this project's FK
# methods, central and federated.
READS_VALIDATION = frozenset({
    "fk-features", "fk-pred", "fk-nn", "fk-nn-split", "fk-nn-kfold", "fk-nn-grad", "fk-oracle", "fk-cov", "fk-mi",
})

# What a curve's label may add to its method's name (common.reporting.method_label).
LABEL_SUFFIXES = ("+trainval", "+kcfu", "+sync")


def base_method(label: str) -> str:
    """The method of a curve label: "fk-nn+trainval" -> "fk-nn"."""
    for suffix in LABEL_SUFFIXES:
        label = label.replace(suffix, "")
    return label


def is_reference(label: str) -> bool:
    """Whether a curve is the all-train reference line rather than an active-learning method."""
    return base_method(label) == ALL_TRAIN


def reads_validation(label: str) -> bool:
    """Whether a curve's acquisition reads validation labels (any FK method, any variant)."""
    return base_method(label) in READS_VALIDATION
