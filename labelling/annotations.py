"""Annotations coming home: a plain `path,label` CSV, or a Label Studio export (JSON, JSON_MIN or CSV), read
into (where, image, label) rows. Checking them against the project is `labelling.project.Project.import_labels`'s.

Label Studio tasks made by label.py carry the project's image path in `data.fkal_path`; a task without
it is matched by its `image` value when that is a path of the project (absolute, or relative to the images
folder). The class is the choice of the labelling config's control named `label`.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

IMAGE_KEY = "fkal_path"  # the data key label.py's tasks carry: the image's path in the project
CONTROL = "label"  # the name of the Choices control in the project's labelling config


@dataclass(frozen=True)
class Annotation:
    where: str  # "FILE row N" / "FILE task T": how errors name it
    image: str  # as the file gives it: a project path, absolute or relative to the images folder
    label: str
    annotator: str = ""


def _choice(value, where: str) -> str:
    """A Choices value as exports write it: "cat", ["cat"] or {"choices": ["cat"]} (one class per image)."""
    if isinstance(value, dict):
        value = value.get("choices")
    if isinstance(value, list):
        if len(value) != 1:
            raise UserError(f"{where}: expected one class, got {value}")
        value = value[0]
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: no class in {value!r}")
    return value.strip()


def _image(data: dict, where: str) -> str:
    image = data.get(IMAGE_KEY) or data.get("image")
    if not isinstance(image, str) or not image:
        raise UserError(f"{where}: the task names no image ({IMAGE_KEY} or image)")
    return image


def from_export(path: Path | str, items) -> list[Annotation]:
    """The annotations of a Label Studio JSON or JSON_MIN export (`path` names it in errors); cancelled
    (skipped) annotations are left out, tasks without annotations give none."""
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a Label Studio export (a JSON list of tasks)")
    found = []
    for number, task in enumerate(items, start=1):
        where = f"{path} task {task.get('id', number) if isinstance(task, dict) else number}"
        if not isinstance(task, dict):
            raise UserError(f"{where}: not a task object")
        if "annotations" in task:  # JSON: every annotation with its result list
            image = _image(task.get("data", {}), where)
            for annotation in task["annotations"]:
                if annotation.get("was_cancelled"):
                    continue
                choices = [r for r in annotation.get("result", []) if r.get("type") == "choices"]
                if len(choices) != 1:
                    raise UserError(f"{where}: annotation {annotation.get('id')} has {len(choices)} choice results")
                found.append(Annotation(where, image, _choice(choices[0].get("value"), where),
                                        str(annotation.get("completed_by", ""))))
        elif CONTROL in task:  # JSON_MIN: the data keys and the control's value, one object per annotated task
            found.append(Annotation(where, _image(task, where), _choice(task[CONTROL], where),
                                    str(task.get("annotator", ""))))
        else:
            raise UserError(f"{where}: neither annotations nor a {CONTROL!r} value: not a Label Studio export")
    return found


def _from_csv(path: Path, rows: list[list[str]]) -> list[Annotation]:
    header = [cell.strip() for cell in rows[0]] if rows else []
    if "annotation_id" in header or (CONTROL in header and ("image" in header or IMAGE_KEY in header)):
        column = {name: i for i, name in enumerate(header)}  # a Label Studio CSV export
        image_column = column.get(IMAGE_KEY, column.get("image"))
        if CONTROL not in column or image_column is None:
            raise UserError(f"{path}: a Label Studio CSV needs the columns image (or {IMAGE_KEY}) and {CONTROL}")
        return [Annotation(f"{path} row {n}", row[image_column], _choice(row[column[CONTROL]], f"{path} row {n}"),
                           row[column["annotator"]] if "annotator" in column else "")
                for n, row in enumerate(rows[1:], start=2) if any(cell.strip() for cell in row)]
    found = []  # a plain path,label CSV, header optional
    for number, row in enumerate(rows, start=1):
        if not row or (number == 1 and [cell.strip().lower() for cell in row] == ["path", "label"]):
            continue
        if len(row) != 2:
            raise UserError(f"{path} row {number}: expected path,label, got {len(row)} fields")
        found.append(Annotation(f"{path} row {number}", row[0].strip(), row[1].strip()))
    return found


def read_annotations(path: Path) -> list[Annotation]:
    """Every annotation of the file, in file order (a Label Studio JSON file by its content, else CSV)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
    if text.lstrip().startswith(("[", "{")):
        try:
            return from_export(path, json.loads(text))
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: not valid JSON (line {error.lineno}: {error.msg})") from None
    return _from_csv(path, list(csv.reader(text.splitlines())))
