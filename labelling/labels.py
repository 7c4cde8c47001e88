"""Labels a user already has, as a `path,label` CSV: checked all or nothing, each mistake one line naming the
file and row."""
from __future__ import annotations

import csv
from pathlib import Path

from common.errors import UserError


def parse_classes(text: str) -> list[str]:
    """--classes cat,dog,fox: at least two distinct, non-empty names."""
    classes = [name.strip() for name in text.split(",")]
    if len(classes) < 2 or any(not name for name in classes):
        raise UserError(f"--classes needs two or more comma-separated names, got {text!r}")
    repeated = sorted({name for name in classes if classes.count(name) > 1})
    if repeated:
        raise UserError(f"--classes names {', '.join(repeated)} twice")
    return classes


def image_key(text: str, images_root: Path) -> str:
    """A CSV path (absolute, or relative to the images folder) as the project's image path; a path outside
    the folder raises ValueError."""
    path = Path(text)
    absolute = (path if path.is_absolute() else images_root / path).resolve()
    return absolute.relative_to(images_root.resolve()).as_posix()


def read_labels_csv(path: Path, images_root: Path, classes: list[str], known: set[str]) -> dict[str, int]:
    """Image path -> class index from a `path,label` CSV (a `path,label` header row is optional). An unknown
    class, a file outside the images folder or not among its images, or one image given two different
    labels is a UserError naming the file and row; nothing is returned then."""
    try:
        with open(path, newline="", encoding="utf-8") as file:
            rows = list(csv.reader(file))
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read the labels file {path}: {getattr(error, 'strerror', None) or error}") from None
    index = {name: i for i, name in enumerate(classes)}
    labels: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        if not row or (number == 1 and [cell.strip().lower() for cell in row] == ["path", "label"]):
            continue
        where = f"{path} row {number}"
        if len(row) != 2:
            raise UserError(f"{where}: expected path,label, got {len(row)} fields")
        image, label = row[0].strip(), row[1].strip()
        if label not in index:
            raise UserError(f"{where}: unknown class {label!r} (classes: {', '.join(classes)})")
        try:
            key = image_key(image, images_root)
        except ValueError:
            raise UserError(f"{where}: {image} is outside the images folder {images_root}") from None
        if key not in known:
            raise UserError(f"{where}: {image} is not an image of the folder {images_root}")
        if labels.get(key, index[label]) != index[label]:
            raise UserError(f"{where}: {image} is labelled {classes[labels[key]]!r} earlier in the file and "
                            f"{label!r} here")
        labels[key] = index[label]
    return labels
