"""docs/method.md is what code comments cite: every `docs/method.md §N` in the package names a section that exists,
and no comment cites the old spec numbering."""

from __future__ import annotations

import re

from conftest import REPO_ROOT

PACKAGE = ("train", "export", "runtime", "co2s_pkg")
CITATION = re.compile(r"docs/method\.md ((?:§[0-9]+(?:\.[0-9]+)?(?:-§[0-9]+(?:\.[0-9]+)?)?(?:, )?)+)")


def _sources():
    for folder in PACKAGE:
        yield from sorted((REPO_ROOT / folder).rglob("*.py"))


def test_every_citation_names_a_section():
    headings = set(re.findall(r"^#+ (§[0-9]+(?:\.[0-9]+)?) ", (REPO_ROOT / "docs" / "method.md").read_text(), re.M))
    cited = {}
    for path in _sources():
        for match in CITATION.finditer(path.read_text()):
            for section in re.findall(r"§[0-9]+(?:\.[0-9]+)?", match.group(1)):
                cited.setdefault(section, path.relative_to(REPO_ROOT).as_posix())
    assert cited, "no citations found: the pattern is out of date"
    missing = {s: where for s, where in cited.items() if s not in headings}
    assert not missing, f"cited sections missing from docs/method.md: {missing}"


def test_no_comment_cites_the_old_spec():
    old = re.compile(r"\bspec (?:§|F?[0-9])|\(F[0-9]\)|spec finding")
    hits = [
        f"{path.relative_to(REPO_ROOT)}:{n}"
        for path in _sources()
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if old.search(line)
    ]
    assert not hits, hits
