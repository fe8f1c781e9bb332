"""Every reference to the design (`docs/design.md §N`, `§1 fact K`, a markdown link to one of its
anchors) names a section that exists, so code, help text and README never point at nothing."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DESIGN = REPO / "docs" / "design.md"
SCANNED = ("halo_core", "halo_assets", "benchmarks", "tests", "deploy", "docs")
TOP_FILES = ("README.md", "Makefile", "pyproject.toml", "workspace.yaml")
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt", ".html", ""}

# `docs/design.md §2 (graph), §5 (verdict)`, `docs/design.md §1 (domain) facts 3-4`, and in markdown
# `[docs/design.md §4](docs/design.md#4-the-embedded-simulator) fact 3`
REFERENCE = re.compile(r"docs/design\.md(?:\]\([^)]*\))?\s*((?:§\d+(?:\s*\([a-z ]+\))?(?:\s+facts?\s+\d+(?:-\d+)?)?"
                       r"(?:\s*,\s*(?=§))?)+)")
SECTION = re.compile(r"§(\d+)(?:\s*\([a-z ]+\))?(?:\s+facts?\s+(\d+)(?:-(\d+))?)?")
LINK = re.compile(r"\((?:[./]*docs/)?design\.md#([a-z0-9-]+)\)|\]\(#([a-z0-9-]+)\)")
README_LINK = re.compile(r"\(\.\./README\.md#([a-z0-9-]+)\)")


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def headings(text: str) -> list[str]:
    return [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]


def design_sections(text: str) -> dict[int, str]:
    """Section number -> its text, from the `## N. Title` headings."""
    parts = re.split(r"^## (\d+)\. .*$", text, flags=re.M)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def facts(section_one: str) -> set[int]:
    return {int(m) for m in re.findall(r"^(\d+)\. \*\*", section_one, flags=re.M)}


def broken_references(text: str, sections: dict[int, str], anchors: set[str]) -> list[str]:
    """What in ``text`` points at a missing section, fact or anchor of the design."""
    known_facts = facts(sections.get(1, ""))
    broken = []
    for ref in REFERENCE.finditer(text):
        for m in SECTION.finditer(ref.group(1)):
            n = int(m.group(1))
            if n not in sections:
                broken.append(f"§{n}")
            elif m.group(2):
                if n != 1:
                    broken.append(f"§{n} fact {m.group(2)}: only §1 numbers facts")
                wanted = range(int(m.group(2)), int(m.group(3) or m.group(2)) + 1)
                broken += [f"§1 fact {k}" for k in wanted if k not in known_facts]
    for m in LINK.finditer(text):
        anchor = m.group(1) or m.group(2)
        if anchor not in anchors:
            broken.append(f"#{anchor}")
    return broken


def scanned_files() -> list[Path]:
    files = [REPO / name for name in TOP_FILES if (REPO / name).exists()]
    for folder in SCANNED:
        files += [p for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix in SUFFIXES
                  and "__pycache__" not in p.parts]
    return sorted(p for p in files if p != Path(__file__).resolve())  # its examples are broken on purpose


def _design():
    text = DESIGN.read_text()
    return text, design_sections(text), {slug(h) for h in headings(text)}


def test_every_design_reference_names_an_existing_section():
    _, sections, anchors = _design()
    problems = {}
    for path in scanned_files():
        text = path.read_text(errors="replace")
        # a design.md link from the docs folder itself is relative to it: `(#anchor)` only counts there
        found = broken_references(text if path.parent.name == "docs" else LINK.sub(_outside_link, text),
                                  sections, anchors)
        if found:
            problems[str(path.relative_to(REPO))] = found
    assert not problems, f"references to missing parts of docs/design.md: {problems}"


def _outside_link(m: re.Match) -> str:
    return m.group(0) if m.group(1) else ""  # `](#x)` outside docs/ is that file's own anchor


def test_references_are_many_and_the_old_brief_is_cited_nowhere():
    """The repointing happened (a scanner that matches nothing would pass anything), and nothing cites
    the design brief outside the repository, which a user's clone does not have."""
    cited = [p for p in scanned_files() if "DESIGN §" in p.read_text(errors="replace")]
    assert not cited, f"cite docs/design.md §N, not the design brief: {[str(p.relative_to(REPO)) for p in cited]}"
    n = sum(len(REFERENCE.findall(p.read_text(errors="replace"))) for p in scanned_files())
    assert n >= 100, n


def test_the_checker_fails_on_a_missing_section_fact_or_anchor():
    _, sections, anchors = _design()
    assert broken_references("see docs/design.md §3 (data contract), §5 (verdict)", sections, anchors) == []
    assert broken_references("docs/design.md §99", sections, anchors) == ["§99"]
    assert broken_references("docs/design.md §2 (graph), §42 (nothing)", sections, anchors) == ["§42"]
    assert broken_references("docs/design.md §1 (domain) facts 5-7", sections, anchors) == ["§1 fact 7"]
    assert broken_references("[x](docs/design.md#no-such-heading)", sections, anchors) == ["#no-such-heading"]


def test_the_index_lists_every_section_and_readme_links_resolve():
    text, sections, anchors = _design()
    assert sorted(sections) == list(range(1, max(sections) + 1)), "sections are numbered 1..N without gaps"
    index = text.split("\n## ", 1)[0]
    assert {int(n) for n in re.findall(r"^\| \[(\d+)\]\(#", index, flags=re.M)} == set(sections)
    assert facts(sections[1]) == {1, 2, 3, 4, 5, 6}
    assert {int(n) for n in re.findall(r"§(\d+)", text)} <= set(sections), "the design's own § references"
    readme = (REPO / "README.md").read_text()
    assert "(docs/design.md)" in readme, "README links to the design"
    readme_anchors = {slug(h) for h in headings(readme)}
    assert all(a in readme_anchors for a in README_LINK.findall(text)), README_LINK.findall(text)
    assert README_LINK.findall(text), "the design links to the README's performance figures"
