"""The files of a batch, PROJECT/batches/NNN/, written from the database (so a missing folder is rewritten):

  batch.csv    rank,path,suggested,confidence   the images to label, most wanted first (paths relative to
                                                the images folder; suggested: the network's class, empty
                                                before any label)
  tasks.json   Label Studio's task import format: data.image (served by Label Studio's local-files
               storage, see docs/labelling.md), data.fkal_path and data.fkal_id, and the suggestion as a
               prediction (pre-annotation) for a Choices control named "label" over an Image named "image"
  sheet.png    a contact sheet: every image (up to SHEET_LIMIT) with its rank and suggestion

A folder is built beside its final name and renamed into place, so it is whole or absent.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
from pathlib import Path
from urllib.parse import quote

from labelling.annotations import CONTROL, IMAGE_KEY
from labelling.project import Project

SHEET_LIMIT = 200  # images drawn on a contact sheet (a batch of 1000 would make a 40-megapixel picture)
THUMB = 96  # thumbnail side in pixels
CAPTION = 14  # caption height under a thumbnail
COLUMNS = 10
IMAGE_CONTROL = "image"  # the Image object's name in the labelling config


def batch_folder(project_folder: Path, batch: int) -> Path:
    return project_folder / "batches" / f"{batch:03d}"


def local_files_url(images_root: Path, path: str) -> str:
    """The URL Label Studio's local-files storage serves an image at, with the images folder's parent as
    LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (so the storage path, the images folder, lies under it)."""
    return "/data/local-files/?d=" + quote(f"{images_root.name}/{path}")


def labelling_config(classes: list[str]) -> str:
    """Label Studio's labelling config for the project: one Choices control over the image."""
    choices = "".join(f'<Choice value="{_xml(name)}"/>' for name in classes)
    return (f'<View><Image name="{IMAGE_CONTROL}" value="${IMAGE_CONTROL}"/>'
            f'<Choices name="{CONTROL}" toName="{IMAGE_CONTROL}" choice="single" showInLine="true">{choices}'
            f"</Choices></View>")


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def tasks(rows: list[tuple[str, int, int | None, float | None]], classes: list[str], images_root: Path,
          model_version: str) -> list[dict]:
    """Label Studio tasks of a batch's rows (path, image id, suggestion, confidence), the suggestion as a
    prediction."""
    result = []
    for path, image_id, suggestion, confidence in rows:
        task: dict = {"data": {IMAGE_CONTROL: local_files_url(images_root, path), IMAGE_KEY: path,
                               "fkal_id": image_id}}
        if suggestion is not None:
            task["predictions"] = [{
                "model_version": model_version, "score": round(float(confidence), 4),
                "result": [{"from_name": CONTROL, "to_name": IMAGE_CONTROL, "type": "choices",
                            "value": {"choices": [classes[suggestion]]}}],
            }]
        result.append(task)
    return result


def batch_csv(rows: list[tuple[str, int, int | None, float | None]], classes: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["rank", "path", "suggested", "confidence"])
    for rank, (path, _id, suggestion, confidence) in enumerate(rows, start=1):
        writer.writerow([rank, path, "" if suggestion is None else classes[suggestion],
                         "" if confidence is None else f"{confidence:.4f}"])
    return buffer.getvalue()


def contact_sheet(rows: list[tuple[str, int, int | None, float | None]], classes: list[str], images_root: Path,
                  target: Path) -> None:
    """sheet.png: the first SHEET_LIMIT images of the batch as thumbnails, captioned rank and suggestion."""
    from PIL import Image, ImageDraw, ImageOps

    shown = rows[:SHEET_LIMIT]
    columns = min(COLUMNS, len(shown)) or 1
    lines = (len(shown) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * THUMB, max(1, lines) * (THUMB + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (path, _id, suggestion, confidence) in enumerate(shown):
        left, top = (index % columns) * THUMB, (index // columns) * (THUMB + CAPTION)
        with Image.open(images_root / path) as image:
            thumb = ImageOps.contain(image.convert("RGB"), (THUMB - 4, THUMB - 4))  # small images grow
        sheet.paste(thumb, (left + (THUMB - thumb.width) // 2, top + (THUMB - thumb.height) // 2))
        caption = f"{index + 1}" if suggestion is None else f"{index + 1} {classes[suggestion]} {confidence:.2f}"
        draw.text((left + 3, top + THUMB), caption[:16], fill="black")
    sheet.save(target)


def write_batch(project_folder: Path, batch: int, rows: list[tuple[str, int, int | None, float | None]],
                classes: list[str], images_root: Path, model_version: str) -> Path:
    """Build the batch's folder beside its final name and rename it into place (replacing an older one)."""
    final = batch_folder(project_folder, batch)
    building = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    (building / "batch.csv").write_text(batch_csv(rows, classes), encoding="utf-8")
    (building / "tasks.json").write_text(json.dumps(tasks(rows, classes, images_root, model_version), indent=1),
                                         encoding="utf-8")
    contact_sheet(rows, classes, images_root, building / "sheet.png")
    if final.exists():
        shutil.rmtree(final)
    os.replace(building, final)
    return final


def model_version(project: Project, batch: int) -> str:
    """The name a batch's suggestions carry as Label Studio predictions: the model version that made them."""
    versions = {row["id"]: row["file"] for row in project.models()}
    model_id = next(row["model_id"] for row in project.batches() if row["id"] == batch)
    return f"fkal-{versions[model_id].removesuffix('.pt')}" if model_id else "fkal-cold-start"


def write_batch_files(project: Project, batch: int) -> None:
    write_batch(project.folder, batch, project.batch_images(batch), project.classes, project.images_root,
                model_version(project, batch))


def restore_batch_files(project: Project) -> list[int]:
    """Rewrite every batch folder that is missing (a command killed between its commit and its files)."""
    missing = [row["id"] for row in project.batches() if not batch_folder(project.folder, row["id"]).is_dir()]
    for batch in missing:
        write_batch_files(project, batch)
    return missing
