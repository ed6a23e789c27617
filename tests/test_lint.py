"""Lint runs as a test, so CI holds the code to it."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or str(pathlib.Path(sys.executable).parent / "ruff")
    if not pathlib.Path(ruff).exists():
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    done = subprocess.run([ruff, "check", "engine", "server", "clients", "proto", "tests",
                           "bench"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_file_a_cython_module_includes_ships_in_the_sdist():
    # A .pxi outside the module's package is not package data: MANIFEST.in must list it,
    # or a wheel built from the sdist fails to compile.
    import re
    import tomllib

    manifest = (ROOT / "MANIFEST.in").read_text().splitlines()  # whole lines: no comments
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pyx in sorted(ROOT.glob("*/*.pyx")):
        globs = data["package-data"].get(f"stockgate.{pyx.parent.name}", [])
        assert "*.pyx" in globs, f"{pyx.relative_to(ROOT)} is not package data"
        for name in re.findall(r'^include "([^"]+)"', pyx.read_text(), re.M):
            path = (pyx.parent / name).resolve().relative_to(ROOT)
            if path.parent == pyx.parent.relative_to(ROOT):
                assert "*.pxi" in globs, f"{path} is not package data"
            else:
                assert f"include {path}" in manifest, f"MANIFEST.in does not include {path}"
