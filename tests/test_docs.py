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
    """The check really compares: an edited copy of the file is refused, an exact copy accepted."""
    text = (REPO_ROOT / "docs" / "cli.md").read_text()
    for name, content, expected in [("stale.md", text.replace("--participation", "--participate"), 1),
                                    ("fresh.md", text, 0)]:
        (tmp_path / name).write_text(content)
        result = subprocess.run([sys.executable, "docs/make_cli.py", "--check", "--target", str(tmp_path / name)],
                                cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == expected, result.stderr
        assert ("is stale" in result.stderr) == bool(expected)
