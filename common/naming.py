"""How runs are named in folders, records' setting keys and plots: the one place of that naming.

Pure functions without torch, so the readers of results (run_plot.py, reporting) load nothing heavy.
"""
from __future__ import annotations

from pathlib import Path

# Where datasets, runs and plots live unless the user says otherwise (git-ignored).
LOCAL_DATA = Path(__file__).resolve().parent.parent / "local_data"


# --unsupervised U: the initial model's kind (initial/<kind>_m<E>.pt) and how plots and tables name it
INITIAL_KINDS = ("random", "rotation", "simclr")
START_NAMES = ("random", "rotation-pretrained", "SimCLR-pretrained")


def imbalance_name(imbalance: float) -> str:
    """The imbalance ratio as folder and file names show it: the shortest text that reads back as the
    same number, so distinct ratios never share a folder (100 -> "100", 10.0000001 -> "10.0000001")."""
    text = repr(float(imbalance))
    return text.removesuffix(".0")


def protocol_variant(federation: str = "", asynchronous: str = "", minority_set: str = "", initial_labels: int = 0,
                     ) -> str:
    """How a protocol beyond imbalance and validation size is named in folders, records' setting keys and
    plots: a chosen minority set ("min2-4-6"), a starting labelled set ("init500"), then "fed-<federation>",
    "async-<asynchronous>"; "" for a central run with the dataset's minority classes and no starting set
    (the one place of that naming)."""
    parts = (minority_set, initial_labels and f"init{initial_labels}", federation and f"fed-{federation}",
             asynchronous and f"async-{asynchronous}")
    return "_".join(part for part in parts if part)


def minority_set_name(classes: tuple[int, ...]) -> str:
    """A user-chosen minority set in folder names: (2, 4, 6) -> "min2-4-6"."""
    return "min" + "-".join(str(c) for c in classes)


def protocol_name(imbalance: float, val_per_class: int, variant: str = "") -> str:
    """`variant`: protocol_variant(...) of a federated or asynchronous protocol."""
    return f"ir{imbalance_name(imbalance)}_val{val_per_class}" + (f"_{variant}" if variant else "")


def run_folder(out: Path, dataset: str, imbalance: float, val_per_class: int, run: int, variant: str = "") -> Path:
    """Runs of different protocols (imbalance, validation size, federation or asynchrony) live side by side."""
    return out / dataset / protocol_name(imbalance, val_per_class, variant) / f"run{run}"


def run_prefix(dataset: str, imbalance: float, variant: str, unsupervised: int, label: str, run: int) -> str:
    """How every log line of one method's run starts: "[digits ir10 u0 fk-nn run0]", with the protocol
    variant when there is one ("[digits ir10 fed-c3-... u0 fk-nn run0]")."""
    parts = [dataset, f"ir{imbalance_name(imbalance)}", variant, f"u{unsupervised}", label, f"run{run}"]
    return "[" + " ".join(part for part in parts if part) + "]"


def run_label(method: str, train_on_validation: bool = False, local_loss: str = "ce", sync: bool = False) -> str:
    """A method run's folder name and curve name: the method, then "+trainval" (it also trained on the
    validation set), "+kcfu" (federated clients trained with KCFU), "+sync" (asynchronous workers queried in
    synchronous rounds). The one place of this naming; reports rebuild it from the records' fields."""
    return (method + ("+trainval" if train_on_validation else "") + ("+kcfu" if local_loss == "kcfu" else "")
            + ("+sync" if sync else ""))
