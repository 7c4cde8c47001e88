"""A labelling project's state: one SQLite database in the project folder.

    PROJECT/project.sqlite   meta (the images folder, classes, model, image size, schema version),
                             images (path, size, content hash), labels (image, class, source, time)

Every command is one transaction, so a command killed at any moment loses nothing and leaves nothing
half written; `create` builds the database beside its final name and renames it, so a killed `init`
leaves no project. A corrupted or foreign database is a one-line UserError.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from common.errors import UserError
from labelling.images import ImageEntry, content_hash

FILE = "project.sqlite"
SCHEMA_VERSION = 1
BUSY_SECONDS = 60.0  # how long a command waits for another one's write transaction
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
                     sha256 TEXT NOT NULL);
CREATE TABLE labels (id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id),
                     class INTEGER NOT NULL, source TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX labels_image ON labels(image_id);
"""
META_KEYS = ("schema_version", "images_root", "classes", "model", "image_size")


class Project:
    """An open project (see the module docstring); `settings` holds its meta values, JSON-decoded."""

    def __init__(self, folder: Path, connection: sqlite3.Connection, settings: dict) -> None:
        self.folder, self.connection, self.settings = folder, connection, settings

    @property
    def classes(self) -> list[str]:
        return self.settings["classes"]

    @property
    def images_root(self) -> Path:
        return Path(self.settings["images_root"])

    @classmethod
    def create(cls, folder: Path, images_root: Path, classes: list[str], entries: list[ImageEntry],
               labels: dict[str, int], model: str, image_size: int) -> "Project":
        """A new project with the scanned `entries` and the known `labels` (image path -> class index)."""
        path = folder / FILE
        if path.exists():
            raise UserError(f"{folder} already holds a labelling project; use another folder")
        folder.mkdir(parents=True, exist_ok=True)
        building = folder / f".{FILE}.{os.getpid()}.tmp"
        building.unlink(missing_ok=True)
        connection = sqlite3.connect(building)
        try:
            with connection:
                connection.executescript(SCHEMA)
                settings = {"schema_version": SCHEMA_VERSION, "images_root": str(images_root.resolve()),
                            "classes": list(classes), "model": model, "image_size": image_size}
                connection.executemany("INSERT INTO meta VALUES (?, ?)",
                                       [(key, json.dumps(value)) for key, value in settings.items()])
                connection.executemany("INSERT INTO images (path, size, sha256) VALUES (?, ?, ?)",
                                       [(e.path, e.size, e.sha256) for e in entries])
                ids = dict(connection.execute("SELECT path, id FROM images"))
                now = time.time()
                connection.executemany("INSERT INTO labels (image_id, class, source, created) VALUES (?, ?, ?, ?)",
                                       [(ids[p], c, "init", now) for p, c in sorted(labels.items())])
        finally:
            connection.close()
        os.replace(building, path)
        return cls.open(folder)

    @classmethod
    def open(cls, folder: Path) -> "Project":
        path = folder / FILE
        if not path.is_file():
            raise UserError(f"{folder} holds no labelling project (no {FILE}); start one with: label.py init")
        connection = sqlite3.connect(path, timeout=BUSY_SECONDS, isolation_level=None)  # transactions: writing()
        try:
            rows = dict(connection.execute("SELECT key, value FROM meta"))
            settings = {key: json.loads(rows[key]) for key in META_KEYS}
            connection.execute("SELECT id, path, size, sha256 FROM images LIMIT 1").fetchall()
            connection.execute("SELECT image_id, class, source, created FROM labels LIMIT 1").fetchall()
        except (sqlite3.DatabaseError, KeyError, ValueError) as error:
            connection.close()
            raise UserError(f"{path} is not a readable labelling project ({type(error).__name__}: "
                            f"{(str(error).splitlines() or [''])[0]}); restore it or start a new project") from None
        if settings["schema_version"] != SCHEMA_VERSION:
            connection.close()
            raise UserError(f"{path} has schema version {settings['schema_version']}, this label.py reads "
                            f"{SCHEMA_VERSION}")
        return cls(folder, connection, settings)

    def close(self) -> None:
        self.connection.close()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """One write transaction that holds the database from its first read (BEGIN IMMEDIATE): committed
        when the block ends, rolled back when it raises (a UserError or an interrupt: nothing half written)."""
        self.connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.connection.rollback()
            raise
        self.connection.commit()

    def image_count(self) -> int:
        return self.connection.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def current_labels(self) -> dict[str, int]:
        """Image path -> its class: the latest label of every labelled image."""
        rows = self.connection.execute(
            "SELECT images.path, labels.class FROM labels JOIN images ON images.id = labels.image_id "
            "ORDER BY labels.id")
        return dict(rows)  # later labels overwrite earlier ones

    def import_labels(self, labels: dict[str, tuple[int, str]], source: str, relabel: bool = False) -> tuple[int, int]:
        """Record `labels` (image path -> (class, where the file gives it)) in one transaction, all or nothing.
        An image whose file changed since init, or a label that contradicts the image's current one without
        `relabel`, is a UserError naming the image and where; returns (new labels, changed labels)."""
        with self.writing():  # the checks and the writes in one transaction: two imports at once take turns
            return self._import_labels(labels, source, relabel)

    def _import_labels(self, labels: dict[str, tuple[int, str]], source: str, relabel: bool) -> tuple[int, int]:
        current = self.current_labels()
        stored = dict(self.connection.execute("SELECT path, sha256 FROM images"))
        for image, (label, where) in labels.items():
            file = self.images_root / image
            if not file.is_file() or content_hash(file) != stored[image]:
                raise UserError(f"{where}: {file} changed since init (its content differs from the image recorded); "
                                f"start a new project for changed images")
            if image in current and current[image] != label and not relabel:
                raise UserError(f"{where}: {image} is already labelled {self.classes[current[image]]!r}, not "
                                f"{self.classes[label]!r}; give --relabel to replace labels")
        fresh = {image: value for image, value in labels.items() if current.get(image) != value[0]}
        ids = dict(self.connection.execute("SELECT path, id FROM images"))
        now = time.time()
        self.connection.executemany(
            "INSERT INTO labels (image_id, class, source, created) VALUES (?, ?, ?, ?)",
            [(ids[image], label, source, now) for image, (label, _where) in sorted(fresh.items())])
        changed = sum(1 for image in fresh if image in current)
        return len(fresh) - changed, changed

    def labels_csv(self) -> str:
        """Every labelled image as `path,label` CSV text (paths relative to the images folder, sorted): what
        `export` writes and `import` and `init --labels` read back."""
        labels = sorted(self.current_labels().items())
        rows = [["path", "label"]] + [[image, self.classes[label]] for image, label in labels]
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        return buffer.getvalue()

    def label_counts(self) -> list[int]:
        """Labelled images per class (latest label of each image)."""
        counts = [0] * len(self.classes)
        for label in self.current_labels().values():
            counts[label] += 1
        return counts
