"""Active learning on your own images with real annotators: a project folder holds the images' state.

    python label.py init PROJECT --images DIR --classes cat,dog,fox [--labels CSV] [--model resnet18] [--image-size 64]
    python label.py import PROJECT FILE                  # a path,label CSV or a Label Studio export
    python label.py status PROJECT
    python label.py export PROJECT                       # PROJECT/export/labels.csv

`init` scans DIR recursively (jpg, png, webp, bmp, tif), records every image by path, size and content
hash, takes the labels you already have (a `path,label` CSV, paths absolute or relative to DIR, and/or
class subfolders with --labels-from-folders) and
checks everything first: an unreadable image, an unknown class or a label for a file outside DIR is one
line naming the file, and no project is made. `import` takes annotations back, all or nothing: a plain
`path,label` CSV or Label Studio's JSON, JSON_MIN or CSV export; an unknown class, an image not in the
project or changed since init, two different labels for one image in the file, or a label that
contradicts an earlier one without --relabel is one line naming the file and row, and nothing is
imported. `status` prints the labelled images per class. `export` writes every label to
PROJECT/export/labels.csv (path,label; paths relative to DIR), atomically.
(Being built: next, the exported model checkpoint and sync with Label Studio are not there yet.)
"""
from __future__ import annotations

from common.cli import exit_quietly_on_interrupt

if __name__ == "__main__":
    exit_quietly_on_interrupt()  # before the heavy imports: Ctrl-C while importing is one line too

import argparse
import sys
from pathlib import Path

from common import storage
from common.cli import DefaultsHelpFormatter, OneLineErrorParser, positive_int, run_main
from labelling.annotations import read_annotations
from labelling.images import scan
from labelling.labels import folder_annotations, parse_classes, resolve_labels
from labelling.project import Project

MODELS = ("lenet", "resnet10", "resnet18")


def get_args_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                prog="label.py")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    init = commands.add_parser("init", help="start a project from a folder of images",
                               formatter_class=DefaultsHelpFormatter)
    init.add_argument("project", type=Path, help="the project folder (created)")
    init.add_argument("--images", type=Path, required=True, help="the folder of images (scanned recursively)")
    init.add_argument("--classes", type=parse_classes, required=True, help="the class names, comma-separated")
    init.add_argument("--labels", type=Path, default=None,
                      help="labels you already have: a path,label CSV (or a Label Studio export)")
    init.add_argument("--labels-from-folders", action="store_true",
                      help="an image under DIR/<class>/ is labelled <class> (with --labels: the two must agree)")
    init.add_argument("--model", choices=MODELS, default="resnet18",
                      help="the network (lenet for small greyscale images)")
    init.add_argument("--image-size", type=positive_int, default=64, help="images are resized to this side")
    take = commands.add_parser("import", help="take annotations back (a path,label CSV or a Label Studio export)")
    take.add_argument("project", type=Path, help="the project folder")
    take.add_argument("file", type=Path, help="the annotations: path,label CSV, or Label Studio JSON / JSON_MIN / CSV")
    take.add_argument("--relabel", action="store_true", help="a label may replace an image's earlier one")
    status = commands.add_parser("status", help="labelled images per class")
    status.add_argument("project", type=Path, help="the project folder")
    export = commands.add_parser("export", help="every label as PROJECT/export/labels.csv")
    export.add_argument("project", type=Path, help="the project folder")
    return parser


def init(args: argparse.Namespace) -> None:
    entries = scan(args.images, progress=sys.stderr.isatty())
    known = {entry.path for entry in entries}
    annotations = read_annotations(args.labels) if args.labels else []
    if args.labels_from_folders:
        annotations = folder_annotations([entry.path for entry in entries], args.classes, args.images) + annotations
    given = resolve_labels(annotations, args.images, args.classes, known)
    labels = {image: label for image, (label, _where) in given.items()}
    project = Project.create(args.project, args.images, args.classes, entries, labels, args.model, args.image_size)
    project.close()
    print(f"{args.project}: {len(entries)} images, {len(labels)} labelled, classes {', '.join(args.classes)}")


def import_file(args: argparse.Namespace) -> None:
    project = Project.open(args.project)
    try:
        known = {path for (path,) in project.connection.execute("SELECT path FROM images")}
        labels = resolve_labels(read_annotations(args.file), project.images_root, project.classes, known)
        new, changed = project.import_labels(labels, f"import:{args.file.name}", relabel=args.relabel)
        print(f"{args.project}: {new} new labels, {changed} changed, {len(labels) - new - changed} already known "
              f"(from {args.file})")
    finally:
        project.close()


def status(args: argparse.Namespace) -> None:
    project = Project.open(args.project)
    try:
        counts, total = project.label_counts(), project.image_count()
        print(f"{args.project}: {total} images, {sum(counts)} labelled, {total - sum(counts)} unlabelled")
        width = max(map(len, project.classes))
        for name, count in zip(project.classes, counts):
            print(f"  {name.ljust(width)}  {count}")
    finally:
        project.close()


def export(args: argparse.Namespace) -> None:
    project = Project.open(args.project)
    try:
        target = args.project / "export" / "labels.csv"
        storage.write_text(target, project.labels_csv())
        print(f"{target}: {sum(project.label_counts())} labels")
    finally:
        project.close()


def main(args: argparse.Namespace) -> None:
    {"init": init, "import": import_file, "status": status, "export": export}[args.command](args)


if __name__ == "__main__":
    run_main(main, get_args_parser())
