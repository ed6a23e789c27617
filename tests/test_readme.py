"""The README's embedded example runs as printed, and its commands are the CI's. (Its
client examples run against a demo server in test_client_docs.py.)"""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_embedded_example_runs_as_printed(tmp_path, monkeypatch):
    embedded = README[README.index("## Embedded, without a server"):]
    code = re.search(r"```python\n(.*?)```", embedded, re.S).group(1)
    assert len(code.strip().splitlines()) <= 15
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    printed = out.getvalue().strip()
    expected = re.search(r"# (INSUFFICIENT_STOCK .*)", code).group(1)
    assert printed == expected


def test_ci_runs_the_readme_test_command():
    commands = re.search(r"```sh\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(commands) == 2
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_demo_runs_twice(tmp_path):
    from stockgate.engine import demo

    for _ in range(2):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert demo.main([str(tmp_path / "data")]) == 0
        assert "consistency check: clean" in out.getvalue()
