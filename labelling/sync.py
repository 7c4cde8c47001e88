"""`label.py sync`: a project and a running Label Studio kept in step.

1. The Label Studio project: `--ls-project ID` (its labelling config must have a Choices control named
   "label" with exactly the project's classes), else the one sync made before on that server, else a new one
   with that config. It gets a local-files storage for the images folder unless it has one.
2. Pull: every annotation of the project's tasks goes through import's checks (labelling.labels,
   Project.import_labels: all or nothing). An image whose annotators disagree is reported and left
   unlabelled, never resolved by sync.
3. Push: every image of an open batch that is not yet a task there becomes one, with the network's
   suggestion as a prediction (the batch's tasks.json rows). Asking Label Studio for its tasks first makes a
   repeated or interrupted sync upload nothing twice.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from common.errors import UserError
from labelling.annotations import IMAGE_KEY, Annotation, from_export
from labelling.batch_files import labelling_config, model_version, tasks
from labelling.label_studio import LabelStudio, config_classes
from labelling.labels import image_key, resolve_labels
from labelling.project import Project

STORAGE_TITLE = "fkal images"


@dataclass
class SyncReport:
    ls_project: int
    created: bool = False
    new: int = 0
    changed: int = 0
    known: int = 0
    disputed: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # image -> [(label, annotator)]
    uploaded: int = 0


def ls_project_for(project: Project, client: LabelStudio, given: int | None) -> tuple[int, bool]:
    """(the Label Studio project to sync with, whether it was made now), its config checked."""
    ls_project = given if given is not None else project.label_studio_project(client.url)
    if ls_project is None:
        title = f"{project.folder.resolve().name} (FKAL)"
        ls_project = client.create_project(title, labelling_config(project.classes))
        project.remember_label_studio_project(client.url, ls_project)
        return ls_project, True
    config = client.project(ls_project).get("label_config", "")
    found = config_classes(config)
    if found is None or sorted(found) != sorted(project.classes):
        raise UserError(f"Label Studio project {ls_project} at {client.url} has no Choices control named 'label' "
                        f"with the classes {', '.join(project.classes)} (found: {found}); use another --ls-project "
                        f"or leave it out to make one")
    if given is not None:
        project.remember_label_studio_project(client.url, ls_project)
    return ls_project, False


def ensure_local_storage(project: Project, client: LabelStudio, ls_project: int) -> None:
    root = str(project.images_root)
    if not any(storage.get("path", "").rstrip("/") == root for storage in client.local_storages(ls_project)):
        client.add_local_storage(ls_project, root, STORAGE_TITLE)


def split_disputes(annotations: list[Annotation], project: Project) -> tuple[list[Annotation], dict]:
    """(annotations of images whose annotators agree, {image: [(label, annotator), ...]} of those that do not)."""
    by_image: dict[str, list[Annotation]] = defaultdict(list)
    for annotation in annotations:
        try:
            by_image[image_key(annotation.image, project.images_root)].append(annotation)
        except ValueError:
            by_image[annotation.image].append(annotation)  # outside the folder: resolve_labels names it
    agreed, disputed = [], {}
    for image, group in by_image.items():
        if len({a.label for a in group}) > 1:
            disputed[image] = [(a.label, a.annotator) for a in group]
        else:
            agreed += group
    return agreed, disputed


def sync(project: Project, client: LabelStudio, given: int | None = None, relabel: bool = False) -> SyncReport:
    ls_project, created = ls_project_for(project, client, given)
    report = SyncReport(ls_project=ls_project, created=created)
    ensure_local_storage(project, client, ls_project)
    exported = client.export(ls_project)
    agreed, report.disputed = split_disputes(from_export(f"Label Studio project {ls_project}", exported), project)
    known = set(project.image_paths())
    labels = resolve_labels(agreed, project.images_root, project.classes, known)
    report.new, report.changed = project.import_labels(labels, f"label-studio:{client.url}/projects/{ls_project}",
                                                       relabel=relabel)
    report.known = len(labels) - report.new - report.changed

    present = {task.get("data", {}).get(IMAGE_KEY) for task in exported}
    labelled = set(project.current_labels())
    upload = []
    for batch in project.batches():
        rows = [row for row in project.batch_images(batch["id"]) if row[0] not in labelled and row[0] not in present]
        upload += tasks(rows, project.classes, project.images_root, model_version(project, batch["id"]))
    if upload:
        report.uploaded = client.import_tasks(ls_project, upload)
    return report
