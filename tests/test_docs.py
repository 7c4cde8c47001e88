"""Documentation generated from the code stays in step with it."""
from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT


def test_cli_reference_is_generated_from_the_current_parsers():
    result = subprocess.run([sys.executable, "docs/make_cli.py", "--check"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    text = (REPO_ROOT / "docs" / "cli.md").read_text()
    for entry in ("run.py", "run_plot.py", "visualize.py", "predict.py"):
        assert f"usage: {entry}" in text
    assert "--initial-labels" in text and "--participation" in text and "--reinit-each-cycle" in text


def test_a_stale_cli_reference_is_caught(tmp_path):
    """The check really compares: an edited copy of the repository's file is refused."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_cli", REPO_ROOT / "docs" / "make_cli.py")
    make_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_cli)
    stale = tmp_path / "cli.md"
    stale.write_text((REPO_ROOT / "docs" / "cli.md").read_text().replace("--participation", "--participate"))
    make_cli.TARGET = stale
    assert make_cli.main_check() == 1
    make_cli.TARGET = REPO_ROOT / "docs" / "cli.md"
    assert make_cli.main_check() == 0
