"""A user's image folder: every image file found, by path relative to the folder, size and content hash.

Scanning reads each file once (hash and a PIL header check), streaming, so memory stays bounded by one
file whatever the folder's size; an unreadable image is a one-line UserError naming it.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from common.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageEntry:
    path: str  # relative to the images folder, "/"-separated
    size: int  # bytes
    sha256: str  # of the file's bytes: a changed image is told from the one labelled


def content_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_readable(path: Path) -> None:
    """PIL can identify and verify the file (a truncated or foreign file is refused, naming it)."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415

    try:
        with Image.open(path) as image:
            image.verify()
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError) as error:
        cause = (str(error).splitlines() or [type(error).__name__])[0]
        raise UserError(f"cannot read the image {path}: {cause}") from None


def image_files(root: Path) -> Iterator[Path]:
    """Every image file under `root` (recursive, by suffix, any case), in a stable order."""
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            yield path


def scan(root: Path, progress: bool = False) -> list[ImageEntry]:
    """Every image under `root`, checked readable, with its size and content hash."""
    if not root.is_dir():
        raise UserError(f"--images {root} is not a folder")
    from tqdm import tqdm  # noqa: PLC0415

    entries = []
    for path in tqdm(list(image_files(root)), desc="scan images", disable=not progress, leave=False):
        check_readable(path)
        entries.append(ImageEntry(path.relative_to(root).as_posix(), path.stat().st_size, content_hash(path)))
    if not entries:
        raise UserError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return entries
