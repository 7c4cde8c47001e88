"""Active learning on your own images with real annotators: a project folder holds the images' state.

    python label.py init PROJECT --images DIR --classes cat,dog,fox [--labels CSV] [--model resnet18] [--image-size 64]
    python label.py next PROJECT --budget 100 [--method fk-nn]   # writes PROJECT/batches/NNN/
    python label.py import PROJECT FILE                  # a path,label CSV or a Label Studio export
    python label.py status PROJECT                       # labels per class, open batches, model quality
    python label.py export PROJECT                       # PROJECT/export/labels.csv and model.pt (predict.py)
    python label.py sync PROJECT --label-studio URL --api-key KEY [--ls-project ID]

`init` scans DIR recursively (jpg, png, webp, bmp, tif), records every image by path, size and content
hash, takes the labels you already have (a `path,label` CSV, paths absolute or relative to DIR, and/or
class subfolders with --labels-from-folders) and
checks everything first: an unreadable image, an unknown class or a label for a file outside DIR is one
line naming the file, and no project is made. `import` takes annotations back, all or nothing: a plain
`path,label` CSV or Label Studio's JSON, JSON_MIN or CSV export; an unknown class, an image not in the
project or changed since init, two different labels for one image in the file, or a label that
contradicts an earlier one without --relabel is one line naming the file and row, and nothing is
imported. `next` trains on the labels so far (resuming the last model) and picks the images worth labelling
with any registered method (the first batch, before any label, covers the pool by k-centre); a batch is
batch.csv, tasks.json (Label Studio tasks with the network's suggestion) and sheet.png. `status` prints the
labelled images per class, the open batches and the network's balanced accuracy on a held-out fold of the
labels, and draws PROJECT/quality.png. `export` writes every label to PROJECT/export/labels.csv (path,label;
paths relative to DIR) and the network trained on every label to PROJECT/export/model.pt, which predict.py
reads. `sync` pushes the open batches to a running Label Studio as tasks with the suggestions as
predictions and pulls its annotations back through import's checks (annotators who disagree are reported,
the image stays unlabelled). How it works and what it costs: docs/labelling.md.
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
from common.errors import UserError
from labelling.annotations import read_annotations
from labelling.batch_files import restore_batch_files
from labelling.images import scan
from labelling.labels import folder_annotations, parse_classes, resolve_labels
from labelling.project import SMALLEST_SIDE, START_KINDS, Project, check_image_size
from labelling.reporting import quality_plot, status_lines

DEFAULT_METHOD = "fk-nn"


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
    init.add_argument("--model", choices=tuple(SMALLEST_SIDE), default="resnet18",
                      help="the network (lenet for small greyscale images)")
    init.add_argument("--image-size", type=positive_int, default=64,
                      help="images are resized (shorter side) and centre-cropped to this side")
    init.add_argument("--start", choices=START_KINDS, default="rotation",
                      help="the network before any label: rotation-pretrained on your images (the FK paper's "
                           "start, once, at the first next), or as randomly drawn")
    init.add_argument("--weights", default=None,
                      help="start from a saved state dict instead: a file (e.g. torchvision's ResNet-18 ImageNet "
                           "weights saved with torch.save(weights.get_state_dict(), PATH)) or, where the internet "
                           "is, a torchvision weights name such as ResNet18_Weights.IMAGENET1K_V1 (downloaded at "
                           "the first next); tensors of the same name and shape are taken, the classifier stays "
                           "new")
    init.add_argument("--seed", type=int, default=0, help="seeds training and picking (same seed, same batches)")
    init.add_argument("--folds", type=_at_least_two, default=5,
                      help="the labels are dealt into this many folds; one, rotating, is held out of training to "
                           "measure the network and to be FK's miss set")
    step = commands.add_parser("next", help="train on the labels so far and write the next batch to label",
                               formatter_class=DefaultsHelpFormatter)
    step.add_argument("project", type=Path, help="the project folder")
    step.add_argument("--budget", type=positive_int, required=True, help="images in the batch")
    step.add_argument("--method", default=DEFAULT_METHOD,
                      help="the acquisition method: any of run.py's (docs/cli.md), e.g. fk-nn, entropy, coreset, "
                           "badge, random")
    _system_flags(step)
    take = commands.add_parser("import", help="take annotations back (a path,label CSV or a Label Studio export)")
    take.add_argument("project", type=Path, help="the project folder")
    take.add_argument("file", type=Path, help="the annotations: path,label CSV, or Label Studio JSON / JSON_MIN / CSV")
    take.add_argument("--relabel", action="store_true", help="a label may replace an image's earlier one")
    status = commands.add_parser("status", help="labelled images per class")
    status.add_argument("project", type=Path, help="the project folder")
    export = commands.add_parser("export", help="every label as PROJECT/export/labels.csv, the network trained on "
                                                 "all of them as PROJECT/export/model.pt (predict.py reads it)",
                                 formatter_class=DefaultsHelpFormatter)
    export.add_argument("project", type=Path, help="the project folder")
    export.add_argument("--labels-only", action="store_true", help="write labels.csv only (no training)")
    _system_flags(export)
    together = commands.add_parser("sync", help="push the open batches to Label Studio and pull its annotations",
                                   formatter_class=DefaultsHelpFormatter)
    together.add_argument("project", type=Path, help="the project folder")
    together.add_argument("--label-studio", required=True, metavar="URL",
                          help="a running Label Studio, e.g. http://localhost:8080, serving local files (see "
                               "docs/labelling.md)")
    together.add_argument("--api-key", required=True,
                          help="a personal access token (Account & Settings) or a legacy token")
    together.add_argument("--ls-project", type=positive_int, default=None,
                          help="an existing Label Studio project (default: the one sync made before, else a new one)")
    together.add_argument("--relabel", action="store_true", help="a label may replace an image's earlier one")
    return parser


def _at_least_two(text: str) -> int:
    value = positive_int(text)
    if value < 2:
        raise argparse.ArgumentTypeError(f"needs at least 2, got {value}")
    return value


def _system_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: the GPU when PyTorch sees one, else the CPU")
    parser.add_argument("--threads", type=positive_int, default=None, help="CPU threads for PyTorch (default: all)")
    parser.add_argument("--progress", action="store_true", help="progress bars for training and describing")


def _system(args: argparse.Namespace):
    from common.train import resolve_device, set_cpu_threads  # torch: only for the commands that train

    if args.threads:
        set_cpu_threads(args.threads)
    return resolve_device(args.device)


def open_project(folder: Path) -> Project:
    """The project, with any batch folder a killed command left unwritten rewritten."""
    project = Project.open(folder)
    try:
        restore_batch_files(project)
    except BaseException:
        project.close()
        raise
    return project


def init(args: argparse.Namespace) -> None:
    entries = scan(args.images, progress=sys.stderr.isatty())
    known = {entry.path for entry in entries}
    annotations = read_annotations(args.labels) if args.labels else []
    if args.labels_from_folders:
        annotations = folder_annotations([entry.path for entry in entries], args.classes, args.images) + annotations
    given = resolve_labels(annotations, args.images, args.classes, known)
    labels = {image: label for image, (label, _where) in given.items()}
    check_image_size(args.model, args.image_size)
    if args.weights is not None:
        from labelling.model import is_weights_name, project_spec, starting_weights

        if Path(args.weights).is_file():
            args.weights = str(Path(args.weights).resolve())
            spec = project_spec(args.model, args.classes, args.image_size)
            starting_weights(spec, args.weights, spec.model(spec.num_classes, False))  # refused now, not at next
        elif not is_weights_name(args.weights):
            raise UserError(f"--weights {args.weights} is neither a file nor a torchvision weights name "
                            "(such as ResNet18_Weights.IMAGENET1K_V1)")
    project = Project.create(args.project, args.images, args.classes, entries, labels, args.model, args.image_size,
                             start=args.start, weights=args.weights, seed=args.seed, folds=args.folds)
    project.close()
    print(f"{args.project}: {len(entries)} images, {len(labels)} labelled, classes {', '.join(args.classes)}; "
          f"next: python label.py next {args.project} --budget N")


def next_batch(args: argparse.Namespace) -> None:
    from labelling.workflow import next_batch as make_batch

    device = _system(args)
    project = open_project(args.project)
    try:
        batch, step, dropped = make_batch(project, args.budget, args.method, device, args.progress,
                                          log=lambda line: print(f"{args.project}: {line}", flush=True))
        folder = args.project / "batches" / f"{batch:03d}"
        estimate = step.model and step.model["balanced_accuracy"]
        quality = (f"; the network's balanced accuracy on {step.model['held_out']} held-out labels "
                   f"{estimate:.3f} ± {step.model['spread']:.3f}") if estimate is not None else ""
        print(f"{folder}: {len(step.chosen) - len(dropped)} images to label, picked by {step.used}{quality}")
        if step.note:
            print(f"note: {step.note}")
        if dropped:
            print(f"note: {len(dropped)} picked images were labelled while next ran and are not in the batch")
    finally:
        project.close()


def import_file(args: argparse.Namespace) -> None:
    project = open_project(args.project)
    try:
        known = {path for (path,) in project.connection.execute("SELECT path FROM images")}
        labels = resolve_labels(read_annotations(args.file), project.images_root, project.classes, known)
        new, changed = project.import_labels(labels, f"import:{args.file.name}", relabel=args.relabel)
        print(f"{args.project}: {new} new labels, {changed} changed, {len(labels) - new - changed} already known "
              f"(from {args.file})")
    finally:
        project.close()


def status(args: argparse.Namespace) -> None:
    project = open_project(args.project)
    try:
        for line in status_lines(project):
            print(line)
        picture = quality_plot(project, args.project / "quality.png")
        if picture:
            print(f"curve: {picture}")
    finally:
        project.close()


def export(args: argparse.Namespace) -> None:
    from labelling.workflow import EXPORT_FILE, export_model

    device = None if args.labels_only else _system(args)
    project = open_project(args.project)
    try:
        target = args.project / "export" / "labels.csv"
        storage.write_text(target, project.labels_csv())
        print(f"{target}: {sum(project.label_counts())} labels")
        if not args.labels_only:
            checkpoint = args.project / "export" / EXPORT_FILE
            storage.save_checkpoint(checkpoint, export_model(project, device, args.progress))
            print(f"{checkpoint}: the network trained on every label; classify files with: "
                  f"python predict.py FILES --checkpoint {checkpoint}")
    finally:
        project.close()


def sync(args: argparse.Namespace) -> None:
    from labelling.label_studio import LabelStudio
    from labelling.sync import sync as synchronise

    client = LabelStudio(args.label_studio, args.api_key)
    project = open_project(args.project)
    try:
        report = synchronise(project, client, args.ls_project, args.relabel)
    finally:
        project.close()
    where = f"{client.url}/projects/{report.ls_project}"
    print(f"{where}{' (new)' if report.created else ''}: pulled {report.new} new labels, {report.changed} changed, "
          f"{report.known} already known; pushed {report.uploaded} tasks")
    for image, answers in sorted(report.disputed.items()):
        given = ", ".join(f"{label!r} by annotator {who or '?'}" for label, who in answers)
        print(f"disputed: {image}: {given} (left unlabelled; settle it in Label Studio)")


def main(args: argparse.Namespace) -> None:
    commands = {"init": init, "next": next_batch, "import": import_file, "status": status, "export": export,
                "sync": sync}
    commands[args.command](args)


if __name__ == "__main__":
    run_main(main, get_args_parser())
