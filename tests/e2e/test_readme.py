"""The README a newcomer reads: its first screen, the cell settings it shows, the quick start."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[2]


def _readme() -> str:
    return (REPO / "README.md").read_text()


def test_readme_shows_the_notebooks_settings_verbatim():
    nb = nbformat.read(REPO / "scripts" / "colab_bootstrap.ipynb", as_version=4)
    (cell,) = [c.source for c in nb.cells if c.cell_type == "code"]
    cell_lines = set(cell.splitlines())
    blocks = [textwrap.dedent(body) for _, body in
              re.findall(r"^( *)```python\n(.*?)^\1```", _readme(), re.M | re.S)]
    shown = next((b for b in blocks if b.startswith("REPO_URL = ")), None)
    assert shown is not None, "the README shows the cell's settings, REPO_URL first"
    for line in shown.splitlines():
        assert line in cell_lines, f"README shows a setting the cell does not have: {line}"


def test_first_screen_says_what_it_is_where_it_may_run_and_the_three_actions():
    readme = _readme()
    journey_at = readme.index("## The journey")
    note = readme[:journey_at]
    assert "Colab's FAQ" in note and "not allowed on" in note and "free Colab runtimes" in note
    for elsewhere in ("paid runtime", "Kaggle-like notebooks", "cloud VMs", "lab servers"):
        assert elsewhere in note, elsewhere
    journey = readme[journey_at:readme.index("## Commands")]
    steps = re.findall(r"^\d\. \*\*(.+?)\*\*", journey, re.M)
    assert steps == ["Run the bootstrap cell", "Paste that line", "Open VS Code"]
    assert readme.count("\n", 0, readme.index("3. **Open VS Code**")) < 80, "the actions come first"
    assert "project/README.md" in readme  # the template's guide lives there


def test_quick_start_and_no_made_up_repository():
    readme = _readme()
    assert "make train" in readme and "make test" in readme
    made_up = "github.com/" + "remotectl/remotectl"  # the repository that never existed
    for text in (readme, (REPO / "scripts" / "colab_bootstrap.ipynb").read_text()):
        assert made_up not in text


# -- the README stays a guide; reference detail lives in docs/, every link of it resolving -----
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(text: str) -> set:
    """The heading anchors GitHub makes for a Markdown text (duplicates get -1, -2, ...)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # no headings inside code blocks
    seen: dict = {}
    found = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def _local_links(page: Path) -> list:
    """(target file, anchor or None) for each link of `page` that stays inside the repository."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    out = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        out.append(((page.parent / path).resolve() if path else page, anchor or None))
    return out


def test_readme_fits_a_newcomer_under_350_lines():
    lines = _readme().count("\n")
    assert lines < 350, f"README.md has {lines} lines; move reference detail into docs/"


def test_every_docs_page_is_linked_from_the_readme_and_every_link_resolves():
    docs = sorted((REPO / "docs").glob("*.md"))
    assert docs, "the reference pages live in docs/"
    linked = {target for target, _ in _local_links(REPO / "README.md")}
    for page in docs:
        assert page.resolve() in linked, f"README.md does not link {page.relative_to(REPO)}"
    for page in [REPO / "README.md", *docs]:
        for target, anchor in _local_links(page):
            where = f"{page.relative_to(REPO)} -> {target.relative_to(REPO)}"
            assert target.exists(), f"{where}: no such file"
            if anchor and target.suffix == ".md":
                assert anchor in _anchors(target.read_text()), f"{where}#{anchor}: no such heading"
