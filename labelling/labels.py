"""Labels checked against a project's images and classes, all or nothing, each mistake one line naming the file
and row (init's known labels and import's annotations alike)."""
from __future__ import annotations

from pathlib import Path

from common.errors import UserError
from labelling.annotations import Annotation


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


def resolve_labels(annotations: list[Annotation], images_root: Path, classes: list[str], known: set[str],
                   ) -> dict[str, tuple[int, str]]:
    """Image path -> (class index, where the file gives it) for every annotation. An unknown class, a file outside
    the images folder or not among its images, or one image given two different labels in the file is a
    UserError naming the file and row; nothing is returned then."""
    index = {name: i for i, name in enumerate(classes)}
    labels: dict[str, tuple[int, str]] = {}
    for annotation in annotations:
        where, image, label = annotation.where, annotation.image, annotation.label
        if label not in index:
            raise UserError(f"{where}: unknown class {label!r} (classes: {', '.join(classes)})")
        try:
            key = image_key(image, images_root)
        except ValueError:
            raise UserError(f"{where}: {image} is outside the images folder {images_root}") from None
        if key not in known:
            raise UserError(f"{where}: {image} is not an image of the folder {images_root}")
        if key in labels and labels[key][0] != index[label]:
            first, earlier = labels[key]
            raise UserError(f"{where}: {image} is labelled {classes[first]!r} at {earlier} and {label!r} here "
                            f"(annotators disagree; settle it in the file)")
        labels.setdefault(key, (index[label], where))
    return labels


def folder_annotations(paths: list[str], classes: list[str], images_root: Path) -> list[Annotation]:
    """Known labels from class subfolders: an image under <images>/<class>/... is labelled <class> (images in
    other folders stay unlabelled)."""
    names = set(classes)
    return [Annotation(f"{images_root}/{path}", path, path.split("/", 1)[0]) for path in paths
            if "/" in path and path.split("/", 1)[0] in names]
