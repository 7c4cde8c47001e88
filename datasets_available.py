"""Registers every dataset folder's specs: the one list of dataset packages (imported for their side effect).

`common/` never imports a dataset folder; the entry points (run.py, visualize.py, benchmarks, tests)
import this module once.
"""
import importlib

DATASET_PACKAGES = ("mnist", "svhn", "cifar", "imagenet")

for _package in DATASET_PACKAGES:
    importlib.import_module(_package)
