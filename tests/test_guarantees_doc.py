"""docs/guarantees.md names a test for every promise: each name must be a test that
exists, and each promise (a bullet that starts in bold) must name at least one."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "guarantees.md"
TEST_REF = re.compile(r"`?(test_\w+\.py)::(test_\w+)(?:\[[^\]]*\])?`?")
SAME = re.compile(r"\((the )?same (crash )?tests?\b")  # the test named just before


def bullets(text: str) -> list[str]:
    """The doc's bullets, each joined with its indented continuation lines."""
    out: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("- "):
            current = [line]
            out.append("")
        elif current is not None and line.startswith("  "):
            current.append(line.strip())
        else:
            current = None
        if current is not None:
            out[-1] = " ".join(current)
    return out


def test_every_test_the_guarantees_name_exists():
    text = DOC.read_text()
    refs = TEST_REF.findall(text)
    assert len(refs) > 20
    missing = [f"{f}::{name}" for f, name in refs
               if not re.search(rf"^def {name}\(", (ROOT / "tests" / f).read_text(), re.M)]
    assert not missing, f"docs/guarantees.md names tests that do not exist: {missing}"


def test_every_promise_names_a_test():
    promises = [b for b in bullets(DOC.read_text()) if b.startswith("- **")]
    assert len(promises) > 20
    bare = [b[:80] for b in promises if not TEST_REF.search(b) and not SAME.search(b)]
    assert not bare, f"promises that name no test: {bare}"
