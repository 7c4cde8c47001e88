"""torchvision's dataset downloads (for users with internet): a failure is one UserError and leaves the
data root as it was, with no empty MNIST/raw tree or half-written archive behind."""
from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from common.errors import UserError


def _paths_under(root: Path) -> set[Path]:
    """Every file and folder below `root` (links not followed)."""
    found = set()
    for folder, folders, files in os.walk(root):
        found.update(Path(folder, name) for name in folders + files)
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def download_or_fail(fetch: Callable[[], object], root: Path, missing: str) -> None:
    """Run `fetch`, a download into `root`. If it fails, whatever it created there is removed (`root` too,
    with its parents, where they were missing; what existed before is left alone) and the failure is
    the UserError "<missing> and the download failed (<exception type>); pass --data-root".

    Listing `root` beforehand walks its tree once; a download only happens when files are missing."""
    root = Path(root).absolute()
    existing = root
    while not existing.exists():
        existing = existing.parent
    before = _paths_under(root) if existing == root else set()
    try:
        fetch()
    except BaseException as exc:  # Ctrl-C too: the partial files go either way
        if existing != root:
            _remove(existing / root.relative_to(existing).parts[0])
        else:
            created = _paths_under(root) - before
            for path in created:
                if path.parent not in created:  # the outermost new paths; removing them takes the rest
                    _remove(path)
        if not isinstance(exc, Exception):
            raise
        raise UserError(f"{missing} and the download failed ({type(exc).__name__}); pass --data-root") from None
