"""Documentation generated from the code stays in step with it."""
from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO_ROOT


def test_cli_reference_is_generated_from_the_current_parsers():
    result = subprocess.run([sys.executable, "docs/make_cli.py", "--check"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    text = (REPO_ROOT / "docs" / "cli.md").read_text()
    for entry in ("run.py", "run_plot.py", "visualize.py", "predict.py", "label.py"):
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


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path):
    return {github_anchor(line.lstrip("#")) for line in path.read_text().splitlines() if line.startswith("#")}


def test_every_relative_link_of_the_readme_and_docs_resolves():
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            file_part, _, anchor = target.partition("#")
            path = (page.parent / file_part).resolve() if file_part else page
            if not path.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def test_the_readme_stays_a_five_minute_read():
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 300
    top = "\n".join(lines[:20])
    assert "make demo" in top and "make test" in top
