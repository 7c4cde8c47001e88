"""label.py on a user's folder of images (PNGs written from scikit-learn's digits): init and status, and
every mistake of init as one line with nothing created."""
from __future__ import annotations

import json
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
    assert [int(line.split()[-1]) for line in shown.stdout.splitlines()[1:11]] == expected
    assert "batches: 0, open: none" in shown.stdout and "network: no estimate yet" in shown.stdout


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


def started(folder: Path) -> Path:
    project = folder / "project"
    assert label_py("init", project, "--images", folder / "images", "--classes", CLASSES).returncode == 0
    return project


def labelled(project: Path) -> dict[str, int]:
    opened = Project.open(project)
    try:
        return opened.current_labels()
    finally:
        opened.close()


def ls_task(task_id: int, image: str, *choices: str, cancelled: bool = False) -> dict:
    """A task of Label Studio's JSON export, one annotation per choice (several annotators)."""
    return {"id": task_id, "data": {"image": f"/data/local-files/?d={image}", "fkal_path": image},
            "annotations": [{"id": 100 * task_id + n, "completed_by": n + 1, "was_cancelled": cancelled,
                             "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                         "value": {"choices": [choice]}}]} for n, choice in enumerate(choices)]}


def test_import_reads_plain_csv_and_every_label_studio_export_format(folder):
    project = started(folder)
    (folder / "plain.csv").write_text("a/digit01.png,one\nb/c/digit02.png,two\n")
    result = label_py("import", project, folder / "plain.csv")
    assert result.returncode == 0, result.stderr
    assert "2 new labels, 0 changed, 0 already known" in result.stdout
    tasks = [ls_task(1, "a/digit03.png", "three", "three"),  # two annotators who agree
             ls_task(2, "a/digit05.png", "five", cancelled=True),  # a skipped task
             ls_task(3, "a/digit01.png", "one")]  # known already
    (folder / "export.json").write_text(json.dumps(tasks))
    assert "1 new labels, 0 changed, 1 already known" in label_py("import", project, folder / "export.json").stdout
    (folder / "min.json").write_text(json.dumps([{"image": "/data/local-files/?d=a/digit07.png",
                                                  "fkal_path": "a/digit07.png", "id": 7, "label": "seven",
                                                  "annotator": 1, "annotation_id": 70}]))
    assert "1 new labels" in label_py("import", project, folder / "min.json").stdout
    (folder / "ls.csv").write_text("image,id,label,annotator,annotation_id,fkal_path\n"
                                   "/data/local-files/?d=a/digit09.png,9,nine,1,90,a/digit09.png\n")
    assert "1 new labels" in label_py("import", project, folder / "ls.csv").stdout
    assert labelled(project) == {"a/digit01.png": 1, "b/c/digit02.png": 2, "a/digit03.png": 3, "a/digit07.png": 7,
                                 "a/digit09.png": 9}


@pytest.mark.parametrize("damage, expected", [
    ("unknown class", "row 2: unknown class 'eleven'"),
    ("not in project", "row 2: a/nowhere.png is not an image of the folder"),
    ("changed", "changed since init"),
    ("annotators disagree", "task 4: a/digit11.png is labelled 'one'"),
    ("contradiction", "row 2: a/digit01.png is already labelled 'one', not 'seven'; give --relabel"),
    ("not an export", "not a Label Studio export"),
])
def test_a_bad_import_is_one_line_and_imports_nothing(folder, damage, expected):
    project = started(folder)
    (folder / "first.csv").write_text("a/digit01.png,one\n")
    assert label_py("import", project, folder / "first.csv").returncode == 0
    bad = folder / "bad.csv"
    lines = "a/digit13.png,three\n"  # a good row first: all or nothing
    if damage == "unknown class":
        bad.write_text(lines + "a/digit15.png,eleven\n")
    elif damage == "not in project":
        bad.write_text(lines + "a/nowhere.png,one\n")
    elif damage == "changed":
        Image.new("L", (8, 8), 255).save(folder / "images" / "a" / "digit11.png")
        bad.write_text(lines + "a/digit11.png,one\n")
    elif damage == "annotators disagree":
        bad = folder / "bad.json"
        bad.write_text(json.dumps([ls_task(3, "a/digit13.png", "three"), ls_task(4, "a/digit11.png", "one", "seven")]))
    elif damage == "contradiction":
        bad.write_text(lines + "a/digit01.png,seven\n")
    else:
        bad = folder / "bad.json"
        bad.write_text(json.dumps([{"id": 1, "data": {"image": "a/digit13.png"}}]))
    line = assert_one_line_error(label_py("import", project, bad))
    assert expected in line, line
    assert labelled(project) == {"a/digit01.png": 1}, "a refused import wrote labels"
    if damage == "contradiction":
        again = label_py("import", project, bad, "--relabel")
        assert again.returncode == 0 and "1 new labels, 1 changed" in again.stdout
        assert labelled(project) == {"a/digit01.png": 7, "a/digit13.png": 3}


def test_two_imports_at_once_both_land(folder):
    project = started(folder)
    files = []
    for n in range(2):  # odd-numbered digits lie in a/; those of 5, 15, 25 end in .PNG
        path = folder / f"part{n}.csv"
        path.write_text("".join(f"a/digit{i:02d}.png,{CLASSES.split(',')[i % 10]}\n" for i in range(1 + 2 * n, 30, 4)
                                if i % 5))
        files.append(path)
    runs = [subprocess.Popen([sys.executable, "label.py", "import", str(project), str(path)], cwd=REPO_ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for path in files]
    assert all(run.wait(timeout=300) == 0 for run in runs), [run.stderr.read() for run in runs]
    expected = {f"a/digit{i:02d}.png": i % 10 for n in range(2) for i in range(1 + 2 * n, 30, 4) if i % 5}
    assert labelled(project) == expected


def test_class_subfolders_label_their_images_and_must_agree_with_the_csv(tmp_path, digits_data):
    images = tmp_path / "images"
    names = CLASSES.split(",")
    for i in range(12):
        sub = images / (names[int(digits_data.test.labels[i])] if i < 8 else "unsorted")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(digits_data.test.images[i, 0].numpy()).save(sub / f"d{i}.png")
    result = label_py("init", tmp_path / "p", "--images", images, "--classes", CLASSES, "--labels-from-folders")
    assert result.returncode == 0 and "12 images, 8 labelled" in result.stdout, result.stderr
    expected = {f"{names[int(digits_data.test.labels[i])]}/d{i}.png": int(digits_data.test.labels[i]) for i in range(8)}
    assert labelled(tmp_path / "p") == expected
    first = next(iter(expected))
    wrong = names[(expected[first] + 1) % 10]
    (tmp_path / "labels.csv").write_text(f"{first},{wrong}\n")
    line = assert_one_line_error(label_py("init", tmp_path / "q", "--images", images, "--classes", CLASSES,
                                          "--labels-from-folders", "--labels", tmp_path / "labels.csv"))
    assert f"{first} is labelled {names[expected[first]]!r}" in line and not (tmp_path / "q" / FILE).exists()


def test_export_writes_every_label_and_a_new_project_reads_it_back(folder):
    project = started(folder)
    (folder / "some.csv").write_text("a/digit01.png,one\nb/c/digit02.png,two\na/digit03.png,three\n")
    assert label_py("import", project, folder / "some.csv").returncode == 0
    result = label_py("export", project)
    assert result.returncode == 0 and "3 labels" in result.stdout, result.stderr
    exported = project / "export" / "labels.csv"
    assert exported.read_text().splitlines() == ["path,label", "a/digit01.png,one", "a/digit03.png,three",
                                                 "b/c/digit02.png,two"]
    again = label_py("init", folder / "copy", "--images", folder / "images", "--classes", CLASSES,
                     "--labels", exported)
    assert again.returncode == 0 and labelled(folder / "copy") == labelled(project)
