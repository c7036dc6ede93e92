"""The README's journey shows the bootstrap cell the notebook really has, and keeps the quick start."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[2]


def test_readme_shows_the_notebooks_cell_verbatim():
    nb = nbformat.read(REPO / "scripts" / "colab_bootstrap.ipynb", as_version=4)
    (cell,) = [c.source for c in nb.cells if c.cell_type == "code"]
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"^( *)```python\n(.*?)^\1```", readme, re.M | re.S)
    shown = [textwrap.dedent(body) for _, body in blocks]
    assert cell.rstrip() + "\n" in shown, "README's bootstrap cell differs from scripts/colab_bootstrap.ipynb"


def test_readme_journey_and_quick_start():
    readme = (REPO / "README.md").read_text()
    assert "make train" in readme and "make test" in readme
    assert "```mermaid" in readme
    journey = readme[readme.index("## The journey"):readme.index("## Commands")]
    steps = re.findall(r"^\d\. \*\*(.+?)\*\*", journey, re.M)
    assert steps == ["Run the bootstrap cell", "Paste that line", "Open VS Code"]
