"""The README's client examples run as printed against a demo server, and the storefront
checkout fits in 15 lines."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re

import pytest
from client_harness import ADMIN, running_server

README = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
# The client examples come before the embedded one, which test_readme.py runs.
EXAMPLES = re.findall(r"```python\n(.*?)```",
                      README[:README.index("## Embedded, without a server")], re.S)
TITLES = ["checkout", "flash sale", "point of sale", "errors"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("demo") / "data", demo=True) as server:
        yield server


def run_example(code: str, demo, monkeypatch) -> str:
    monkeypatch.setenv("STOCKGATE_ADDRESS", demo.address)
    monkeypatch.setenv("STOCKGATE_TOKEN", ADMIN)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    return out.getvalue()


def test_the_readme_has_the_client_examples():
    assert len(EXAMPLES) == len(TITLES)
    assert len(EXAMPLES[0].strip().splitlines()) <= 15


def test_checkout(demo, monkeypatch):
    assert run_example(EXAMPLES[0], demo, monkeypatch).strip() == "OK COMMITTED"


def test_flash_sale(demo, monkeypatch):
    printed = run_example(EXAMPLES[1], demo, monkeypatch)
    counts = eval(printed.splitlines()[0], {"Counter": dict})  # Counter({...})
    assert counts["OK"] == 50  # the demo campaign's quota
    assert sum(counts.values()) == 1_000
    assert set(counts) <= {"OK", "INSUFFICIENT_STOCK", "CUSTOMER_LIMIT"}
    assert printed.splitlines()[1] == "{'SKU-1000': 0}"


def test_point_of_sale(demo, monkeypatch):
    printed = run_example(EXAMPLES[2], demo, monkeypatch).splitlines()
    assert printed[0].startswith("on the shelf: {") and "'SKU-1005': 100" in printed[0]
    assert printed[1].startswith("now: {")


def test_error_handling(demo, monkeypatch):
    printed = run_example(EXAMPLES[3], demo, monkeypatch).splitlines()
    assert printed[0].startswith("lines[0].qty -> ")
    assert printed[1] == "OK first answer"
