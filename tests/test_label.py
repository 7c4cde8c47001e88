"""label.py on a user's folder of images (PNGs written from scikit-learn's digits): init and status, and
every mistake of init as one line with nothing created."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO_ROOT, assert_one_line_error
from labelling.images import content_hash, scan
from labelling.project import FILE, Project

CLASSES = "zero,one,two,three,four,five,six,seven,eight,nine"


def label_py(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "label.py", *map(str, args)], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture()
def folder(tmp_path: Path, digits_data) -> Path:
    """30 digit images as PNGs in nested folders (some upper-case suffixes), and a labels CSV for 4 of them."""
    images = tmp_path / "images"
    test = digits_data.test
    for i in range(30):
        sub = images / ("a" if i % 2 else "b/c")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.images[i, 0].numpy()).save(sub / f"digit{i:02d}{'.PNG' if i % 5 == 0 else '.png'}")
    (images / "notes.txt").write_text("not an image")
    names = CLASSES.split(",")
    rows = ["path,label", f"a/digit01.png,{names[int(test.labels[1])]}",
            f"{images / 'b/c/digit02.png'},{names[int(test.labels[2])]}",  # absolute paths work too
            f"b/c/digit04.png,{names[int(test.labels[4])]}", f"a/digit03.png,{names[int(test.labels[3])]}"]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path


def test_init_records_every_image_and_the_known_labels_and_status_counts_them(folder, digits_data):
    project = folder / "project"
    result = label_py("init", project, "--images", folder / "images", "--classes", CLASSES,
                      "--labels", folder / "labels.csv", "--model", "lenet", "--image-size", "28")
    assert result.returncode == 0, result.stderr
    assert "30 images, 4 labelled" in result.stdout
    opened = Project.open(project)
    try:
        rows = opened.connection.execute("SELECT path, size, sha256 FROM images ORDER BY path").fetchall()
        assert len(rows) == 30 and rows[0][0] == "a/digit01.png" and "b/c/digit00.PNG" in [r[0] for r in rows]
        first = folder / "images" / rows[0][0]
        assert rows[0][1:] == (first.stat().st_size, content_hash(first))
        labels = digits_data.test.labels
        assert opened.current_labels() == {"a/digit01.png": int(labels[1]), "b/c/digit02.png": int(labels[2]),
                                           "b/c/digit04.png": int(labels[4]), "a/digit03.png": int(labels[3])}
        assert opened.settings["model"] == "lenet" and opened.settings["image_size"] == 28
    finally:
        opened.close()
    shown = label_py("status", project)
    assert shown.returncode == 0 and "30 images, 4 labelled, 26 unlabelled" in shown.stdout
    expected = [0] * 10
    for i in (1, 2, 3, 4):
        expected[int(labels[i])] += 1
    assert [int(line.split()[-1]) for line in shown.stdout.splitlines()[1:]] == expected


@pytest.mark.parametrize("damage, expected", [
    ("unreadable", "cannot read the image"),
    ("unknown class", "row 2: unknown class 'eleven'"),
    ("outside", "is outside the images folder"),
    ("not an image", "is not an image of the folder"),
    ("two labels", "row 3: a/digit01.png is labelled"),
    ("classes", "--classes needs two or more"),
])
def test_every_mistake_of_init_is_one_line_and_makes_no_project(folder, damage, expected):
    labels = folder / "labels.csv"
    classes = CLASSES
    if damage == "unreadable":
        (folder / "images" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    elif damage == "unknown class":
        labels.write_text("path,label\na/digit01.png,eleven\n")
    elif damage == "outside":
        labels.write_text(f"{folder / 'labels.csv'},one\n")
    elif damage == "not an image":
        labels.write_text("a/notes.txt,one\n")
    elif damage == "two labels":
        labels.write_text("path,label\na/digit01.png,one\na/digit01.png,two\n")
    else:
        classes = "cat"
    line = assert_one_line_error(label_py("init", folder / "project", "--images", folder / "images",
                                          "--classes", classes, "--labels", labels))
    assert expected in line, line
    assert not (folder / "project" / FILE).exists()


def test_a_second_init_and_a_damaged_or_foreign_database_are_refused(folder):
    project = folder / "project"
    assert label_py("init", project, "--images", folder / "images", "--classes", CLASSES).returncode == 0
    line = assert_one_line_error(label_py("init", project, "--images", folder / "images", "--classes", CLASSES))
    assert "already holds a labelling project" in line
    (project / FILE).write_bytes(b"garbage" * 100)
    assert "is not a readable labelling project" in assert_one_line_error(label_py("status", project))
    (project / FILE).unlink()
    sqlite3.connect(project / FILE).execute("CREATE TABLE other (x)").connection.commit()
    assert "is not a readable labelling project" in assert_one_line_error(label_py("status", project))
    assert "holds no labelling project" in assert_one_line_error(label_py("status", folder / "nowhere"))


def test_scan_finds_images_by_suffix_in_any_case_and_in_a_stable_order(folder):
    entries = scan(folder / "images")
    assert len(entries) == 30 and [e.path for e in entries] == sorted(e.path for e in entries)
    assert not any(e.path.endswith(".txt") for e in entries)
