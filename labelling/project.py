"""A labelling project's state: one SQLite database in the project folder.

    PROJECT/project.sqlite   meta (the images folder, classes, model, image size, start, seed, folds, schema),
                             images (path, size, content hash), labels (image, class, source, time),
                             models (a trained network per `next`: file, labels, held-out estimate),
                             batches and batch_images (what each `next` asked for, with the suggestions)
    PROJECT/models/          model_NNN.pt (a model version's weights), start.pt (the network before any label)
    PROJECT/batches/NNN/     batch.csv, tasks.json, sheet.png (labelling/batch_files.py; rewritten from the
                             database when missing)

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
SCHEMA_VERSION = 2
BUSY_SECONDS = 60.0  # how long a command waits for another one's write transaction
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE images (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER NOT NULL,
                     sha256 TEXT NOT NULL);
CREATE TABLE labels (id INTEGER PRIMARY KEY, image_id INTEGER NOT NULL REFERENCES images(id),
                     class INTEGER NOT NULL, source TEXT NOT NULL, created REAL NOT NULL);
CREATE INDEX labels_image ON labels(image_id);
CREATE TABLE models (id INTEGER PRIMARY KEY, file TEXT NOT NULL, labels INTEGER NOT NULL, trained_on INTEGER NOT NULL,
                     held_out_fold INTEGER NOT NULL, held_out INTEGER NOT NULL, balanced_accuracy REAL,
                     spread REAL, created REAL NOT NULL);
CREATE TABLE batches (id INTEGER PRIMARY KEY, method TEXT NOT NULL, used TEXT NOT NULL, note TEXT NOT NULL,
                      model_id INTEGER REFERENCES models(id), created REAL NOT NULL);
CREATE TABLE batch_images (batch_id INTEGER NOT NULL REFERENCES batches(id),
                           image_id INTEGER NOT NULL REFERENCES images(id), rank INTEGER NOT NULL,
                           suggestion INTEGER, confidence REAL, PRIMARY KEY (batch_id, image_id));
"""
META_KEYS = ("schema_version", "images_root", "classes", "model", "image_size", "start", "weights", "seed", "folds")
LABEL_STUDIO_KEY = "label_studio_projects"  # meta: Label Studio URL -> its project for this one (sync)
START_KINDS = ("rotation", "random")
# --model: the networks of labelling/model.py, each with the smallest image side its feature maps survive
SMALLEST_SIDE = {"lenet": 16, "resnet10": 8, "resnet18": 32}


def check_image_size(model: str, size: int) -> None:
    if size < SMALLEST_SIDE[model]:
        raise UserError(f"--image-size {size} is too small for {model} (at least {SMALLEST_SIDE[model]})")
  # the network before any label: rotation-pretrained on the pool, or as drawn


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
               labels: dict[str, int], model: str, image_size: int, start: str = "rotation",
               weights: str | None = None, seed: int = 0, folds: int = 5) -> "Project":
        """A new project with the scanned `entries` and the known `labels` (image path -> class index); the
        network starts from `weights` (a saved state dict's file, or a torchvision weights name) when given,
        else from `start`."""
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
                            "classes": list(classes), "model": model, "image_size": image_size,
                            "start": "weights" if weights else start,
                            "weights": weights, "seed": seed, "folds": folds}
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
            version = json.loads(rows["schema_version"])
            if version != SCHEMA_VERSION:
                connection.close()
                raise UserError(f"{path} has schema version {version}, this label.py reads {SCHEMA_VERSION}")
            settings = {key: json.loads(rows[key]) for key in META_KEYS}
            connection.execute("SELECT id, path, size, sha256 FROM images LIMIT 1").fetchall()
            connection.execute("SELECT image_id, class, source, created FROM labels LIMIT 1").fetchall()
            connection.execute("SELECT id, file, labels, balanced_accuracy, spread FROM models LIMIT 1").fetchall()
            connection.execute("SELECT batch_id, image_id, rank, suggestion, confidence FROM batch_images LIMIT 1")
        except (sqlite3.DatabaseError, KeyError, ValueError) as error:
            connection.close()
            raise UserError(f"{path} is not a readable labelling project ({type(error).__name__}: "
                            f"{(str(error).splitlines() or [''])[0]}); restore it or start a new project") from None
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

    def image_paths(self) -> list[str]:
        """Every image path in id order (an image's pool position is its place here)."""
        return [path for (path,) in self.connection.execute("SELECT path FROM images ORDER BY id")]

    def labels_in_order(self) -> list[tuple[str, int]]:
        """(image path, its current class) of every labelled image, in the order the images were first
        labelled (so the folds dealt from it stay put as labels arrive)."""
        current = self.current_labels()
        rows = self.connection.execute(
            "SELECT images.path FROM labels JOIN images ON images.id = labels.image_id GROUP BY labels.image_id "
            "ORDER BY MIN(labels.id)")
        return [(path, current[path]) for (path,) in rows]

    def asked(self) -> set[str]:
        """Images of an earlier batch that have no label yet (out with the annotators)."""
        rows = self.connection.execute(
            "SELECT images.path FROM batch_images JOIN images ON images.id = batch_images.image_id "
            "WHERE batch_images.image_id NOT IN (SELECT image_id FROM labels)")
        return {path for (path,) in rows}

    def models(self) -> list[dict]:
        """Every model version, oldest first: id, file, labels, trained_on, held_out_fold, held_out,
        balanced_accuracy, spread."""
        self.connection.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in self.connection.execute("SELECT * FROM models ORDER BY id")]
        finally:
            self.connection.row_factory = None

    def batches(self) -> list[dict]:
        """Every batch, oldest first: id, method, used (what picked it), note, model_id, size, labelled."""
        self.connection.row_factory = sqlite3.Row
        try:
            return [dict(row) for row in self.connection.execute(
                "SELECT batches.*, COUNT(batch_images.image_id) AS size, "
                "SUM(batch_images.image_id IN (SELECT image_id FROM labels)) AS labelled "
                "FROM batches LEFT JOIN batch_images ON batch_images.batch_id = batches.id "
                "GROUP BY batches.id ORDER BY batches.id")]
        finally:
            self.connection.row_factory = None

    def batch_images(self, batch: int) -> list[tuple[str, int, int | None, float | None]]:
        """(path, image id, suggested class or None, confidence or None) of a batch's images, in rank order."""
        return list(self.connection.execute(
            "SELECT images.path, images.id, batch_images.suggestion, batch_images.confidence FROM batch_images "
            "JOIN images ON images.id = batch_images.image_id WHERE batch_id = ? ORDER BY rank", (batch,)))

    def record_next(self, model: dict | None, method: str, used: str, note: str,
                    chosen: list[tuple[str, int | None, float | None]]) -> tuple[int, list[str]]:
        """One `next` in one transaction: the model version it trained (None: none trained) and its batch,
        `chosen` (path, suggestion, confidence) in rank order. Images labelled while `next` ran are left out
        of the batch; returns (batch id, those images)."""
        with self.writing():
            labelled = set(self.current_labels())
            model_id = None
            if model is not None:
                model_id = self.connection.execute(
                    "INSERT INTO models (file, labels, trained_on, held_out_fold, held_out, balanced_accuracy, "
                    "spread, created) VALUES (:file, :labels, :trained_on, :held_out_fold, :held_out, "
                    ":balanced_accuracy, :spread, :created)", {**model, "created": time.time()}).lastrowid
            batch = self.connection.execute(
                "INSERT INTO batches (method, used, note, model_id, created) VALUES (?, ?, ?, ?, ?)",
                (method, used, note, model_id, time.time())).lastrowid
            ids = dict(self.connection.execute("SELECT path, id FROM images"))
            kept = [row for row in chosen if row[0] not in labelled]
            self.connection.executemany(
                "INSERT INTO batch_images (batch_id, image_id, rank, suggestion, confidence) VALUES (?, ?, ?, ?, ?)",
                [(batch, ids[path], rank, suggestion, confidence)
                 for rank, (path, suggestion, confidence) in enumerate(kept)])
            return batch, [path for path, _s, _c in chosen if path in labelled]

    def label_studio_project(self, url: str) -> int | None:
        """The Label Studio project `sync` made for this project on the server at `url` (None: none yet)."""
        row = self.connection.execute("SELECT value FROM meta WHERE key = ?", (LABEL_STUDIO_KEY,)).fetchone()
        return json.loads(row[0]).get(url) if row else None

    def remember_label_studio_project(self, url: str, project: int) -> None:
        with self.writing():
            row = self.connection.execute("SELECT value FROM meta WHERE key = ?", (LABEL_STUDIO_KEY,)).fetchone()
            known = {**(json.loads(row[0]) if row else {}), url: project}
            self.connection.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (LABEL_STUDIO_KEY, json.dumps(known)))
