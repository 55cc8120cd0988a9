"""The docs agree with the code and with themselves: docs/configuration.md has a row for
every key of GatewayConfig and CloudConfig and none that is not one; every relative link
in README.md, docs/*.md and backend/README.md names a file that exists and, with an
#anchor, a heading of that file (GitHub's anchor rules)."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from urllib.parse import unquote

import pytest

from aquafog.config import CloudConfig, GatewayConfig

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
LINKED = [ROOT / "README.md", ROOT / "backend" / "README.md", *sorted(DOCS.glob("*.md"))]
FRONT_PAGE_MAX_LINES = 200

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)*?\1")
LINK = re.compile(r"\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")


def prose_lines(text: str):
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text as rendered (link text kept, code and
    emphasis marks dropped), lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading's anchor, a repeated one with GitHub's -1, -2 ... suffix."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path):
    """(line number, target) of every markdown link outside code."""
    for n, line in prose_lines(path.read_text(encoding="utf-8")):
        for m in LINK.finditer(CODE_SPAN.sub("", line)):
            yield n, m.group(2)


def test_slug_follows_github():
    assert slug("Reading: `aquafog/<meter>/tele/reading`") == "reading-aquafogmetertelereading"
    assert slug("Availability: `aquafog/<meter>/status` (retained)") == "availability-aquafogmeterstatus-retained"
    assert slug("City scale: fogs and the cloud") == "city-scale-fogs-and-the-cloud"
    assert slug("The cloud's endpoints") == "the-clouds-endpoints"
    assert slug("Provisioning (`tools/provision.py`)") == "provisioning-toolsprovisionpy"
    assert slug("Faults: what we break, and what we count") == "faults-what-we-break-and-what-we-count"


@pytest.mark.parametrize("doc", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path):
    broken = []
    for n, target in links(doc):
        if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        dest = (doc.parent / unquote(path_part)).resolve() if path_part else doc
        where = f"{doc.relative_to(ROOT)}:{n}: {target}"
        if not dest.exists():
            broken.append(f"{where}: no such file")
        elif anchor and dest.is_file() and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{where}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, "broken links:\n  " + "\n  ".join(broken)


def config_table(title: str) -> list[str]:
    """The keys named in the first column of the table under the '## <title>' heading of
    docs/configuration.md (a row may name several: `http_host`, `http_port`)."""
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    keys = []
    for line in text[start:end if end >= 0 else None].splitlines():
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        first = line.split("|")[1]
        if first.strip() == "key":  # the header row
            continue
        names = re.findall(r"`\[?([a-z_][a-z0-9_]*)\]?`", first)
        assert names, f"configuration.md '{title}': a row names no key: {line[:80]}"
        keys.extend(names)
    return keys


@pytest.mark.parametrize("title, cls", [("The gateway", GatewayConfig), ("The cloud", CloudConfig)])
def test_configuration_tables_name_every_key_and_only_keys(title, cls):
    documented = config_table(title)
    real = {f.name for f in fields(cls)}
    assert not [k for k in real if k not in documented], \
        f"docs/configuration.md '{title}' lacks a row for these {cls.__name__} keys"
    assert not [k for k in documented if k not in real], \
        f"docs/configuration.md '{title}' documents keys {cls.__name__} does not have"
    assert len(documented) == len(set(documented)), f"a key is documented twice under '{title}'"


def test_docs_index_lists_every_doc():
    index = DOCS / "README.md"
    listed = [t.partition("#")[0] for _, t in links(index) if "/" not in t]
    files = sorted(p.name for p in DOCS.glob("*.md") if p.name != "README.md")
    assert sorted(set(listed)) == files, "docs/README.md must link every file in docs/ (and only those)"


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= FRONT_PAGE_MAX_LINES, \
        f"README.md has {lines} lines; it is a front page (at most {FRONT_PAGE_MAX_LINES}): move the rest to docs/"
