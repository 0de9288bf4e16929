"""The documentation stays short where it must, its relative links resolve, and it is hand-written.

README.md, CHANGELOG.md and the model card have line limits; every relative Markdown link in the
product's documentation must name an existing file and, with a ``#anchor``, a heading of that file
(GitHub's anchor rules); nothing is generated from fragments any more; and the default weights'
headline numbers live in the model card only.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent

LINE_LIMITS = {"README.md": 250, "CHANGELOG.md": 200, "weights/README.md": 350}

# The default weights' headline pixel F1: stated in the model card's "At a glance" table only.
HEADLINE_F1 = "0.475"

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_INLINE_CODE = re.compile(r"`+[^`]*`+")


def doc_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "weights" / "README.md", ROOT / "examples" / "README.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    return files


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    lines, in_fence = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            lines.append(line)
    return lines


def github_anchor(heading: str) -> str:
    """GitHub's anchor for a heading: rendered text, lowercase, punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML tags
    text = text.lower()
    text = re.sub(r"[^\w\- ]", "", text)  # keeps letters, digits, '_', '-' and spaces
    return text.replace(" ", "-")


def anchors_of(path: Path) -> set[str]:
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        m = _HEADING.match(line)
        if not m:
            continue
        base = github_anchor(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        anchors.add(base if n == 0 else f"{base}-{n}")
    # explicit HTML anchors, e.g. <a id="name"></a>
    for m in re.finditer(r"<a\s+(?:id|name)=\"([^\"]+)\"", path.read_text(encoding="utf-8")):
        anchors.add(m.group(1))
    return anchors


def relative_links(path: Path) -> list[str]:
    """Link targets in the prose (not in code) that are neither absolute URLs nor mail addresses."""
    targets = []
    for line in _prose_lines(path.read_text(encoding="utf-8")):
        ref = _REF_DEF.match(line)
        if ref:
            targets.append(ref.group(1))
            continue
        line = _INLINE_CODE.sub("", line)
        targets += [m.group(1) for m in _INLINE_LINK.finditer(line)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


def test_github_anchor_rules():
    assert github_anchor("At a glance") == "at-a-glance"
    assert github_anchor("Resolution: `--mode resize` and `--mode native`") == (
        "resolution---mode-resize-and---mode-native"
    )
    assert github_anchor("Stage 14: not the optimizer's noise (after v26)") == (
        "stage-14-not-the-optimizers-noise-after-v26"
    )
    assert github_anchor("snake_case and 1.1.0") == "snake_case-and-110"


@pytest.mark.parametrize("name,limit", sorted(LINE_LIMITS.items()))
def test_line_limits(name, limit):
    n = len((ROOT / name).read_text(encoding="utf-8").splitlines())
    assert n <= limit, f"{name} has {n} lines; the limit is {limit}: move depth to docs/ or lab/records/"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    problems = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: no such file")
            continue
        if anchor and dest.is_file() and dest.suffix == ".md" and unquote(anchor) not in anchors_of(dest):
            problems.append(f"{target}: no heading '#{anchor}' in {dest.relative_to(ROOT)}")
    assert not problems, f"broken links in {path.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_docs_are_not_generated():
    for name in ("docs/build_docs.sh", "docs/sections", "docs/changelog"):
        assert not (ROOT / name).exists(), f"{name} exists: documentation is written by hand, not assembled"


@pytest.mark.parametrize("path", [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_default_weights_numbers_live_in_the_model_card(path):
    text = path.read_text(encoding="utf-8")
    number = re.compile(rf"(?<![\d.]){re.escape(HEADLINE_F1)}(?!\d)")
    hits = [i for i, line in enumerate(text.splitlines(), 1) if number.search(line)]
    assert not hits, (
        f"{path.relative_to(ROOT)} restates the default weights' pixel F1 {HEADLINE_F1} (lines {hits}); "
        "link to weights/README.md#at-a-glance instead"
    )


def test_the_model_card_keeps_its_at_a_glance_table():
    card = (ROOT / "weights" / "README.md").read_text(encoding="utf-8")
    assert "at-a-glance" in anchors_of(ROOT / "weights" / "README.md")
    assert HEADLINE_F1 in card
