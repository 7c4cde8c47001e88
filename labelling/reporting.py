"""What `label.py status` shows: labels per class, the batches, the network's held-out estimate, notes on
classes too small for the folds, and the estimate against labels as PROJECT/quality.png."""
from __future__ import annotations

from pathlib import Path

from labelling.batch_files import batch_folder
from labelling.project import Project


def status_lines(project: Project) -> list[str]:
    counts, total = project.label_counts(), project.image_count()
    folds = project.settings["folds"]
    lines = [f"{project.folder}: {total} images, {sum(counts)} labelled, {total - sum(counts)} unlabelled"]
    width = max(map(len, project.classes))
    lines += [f"  {name.ljust(width)}  {count}" for name, count in zip(project.classes, counts)]
    batches = project.batches()
    open_batches = [row for row in batches if row["labelled"] < row["size"]]
    lines.append(f"batches: {len(batches)}, open: " + (", ".join(
        f"{batch_folder(project.folder, row['id'])} ({row['size'] - row['labelled']} of {row['size']} unlabelled)"
        for row in open_batches) or "none"))
    for row in batches[-1:]:
        if row["note"]:
            lines.append(f"note on batch {row['id']:03d}: {row['note']}")
    versions = [row for row in project.models() if row["balanced_accuracy"] is not None]
    if versions:
        latest = versions[-1]
        lines.append(f"network {latest['file']}: balanced accuracy {latest['balanced_accuracy']:.3f} "
                     f"± {latest['spread']:.3f} (bootstrap) on {latest['held_out']} held-out labels, trained on "
                     f"{latest['trained_on']} of {latest['labels']}")
    else:
        lines.append("network: no estimate yet (next trains one once labels are imported)")
    small = [(name, count) for name, count in zip(project.classes, counts) if count < folds]
    if small and sum(counts):
        names = ", ".join(f"{name} ({count})" for name, count in small)
        lines.append(
            f"note: fewer labels than the {folds} folds for {names}: some batches' held-out fold holds none of "
            f"them, so FK (fk-nn and its kin) cannot meet them among its misses then and the estimate leaves them "
            f"out; with no held-out label at all FK falls back to coreset, and with no miss to the least "
            f"confident held-out images")
    return lines


def quality_plot(project: Project, target: Path) -> Path | None:
    """The held-out balanced accuracy (± its bootstrap spread) against the labels, one point per network
    version; None before there are two versions to draw."""
    versions = [row for row in project.models() if row["balanced_accuracy"] is not None]
    if len(versions) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [row["labels"] for row in versions]
    estimate = [row["balanced_accuracy"] for row in versions]
    spread = [row["spread"] for row in versions]
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.errorbar(labels, estimate, yerr=spread, marker="o", capsize=3)
    axes.set_xlabel("labelled images")
    axes.set_ylabel("balanced accuracy (held-out fold)")
    axes.set_ylim(0, 1)
    axes.grid(alpha=0.3)
    axes.set_title(project.folder.name)
    figure.tight_layout()
    building = target.with_name(f".{target.name}.tmp.png")
    figure.savefig(building, dpi=100)
    plt.close(figure)
    building.replace(target)
    return target
