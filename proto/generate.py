"""Regenerate the Python modules of the gRPC contract beside the .proto files.

    python proto/generate.py            # rewrite proto/stockgate/v1/*_pb2*.py(i)
    python proto/generate.py --check    # exit 1 if they are stale (a test runs this)

The generated modules import each other as `stockgate.v1.*`, the package that
pyproject.toml maps to proto/stockgate/v1.
"""

from __future__ import annotations

import argparse
import filecmp
import importlib.resources
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "stockgate" / "v1"
GENERATED = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py")


def generate(out: Path) -> None:
    from grpc_tools import protoc  # grpcio-tools, pinned with grpcio in pyproject.toml

    protos = sorted(str(p.relative_to(HERE)) for p in PACKAGE.glob("*.proto"))
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    args = ["protoc", f"-I{HERE}", f"-I{well_known}", f"--python_out={out}",
            f"--pyi_out={out}", f"--grpc_python_out={out}", *protos]
    cwd = os.getcwd()
    os.chdir(HERE)
    try:
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
    finally:
        os.chdir(cwd)


def stale() -> list[str]:
    """Generated files that differ from what protoc makes now (or are missing/extra)."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = Path(tmp) / "stockgate" / "v1"
        want = {p.name for g in GENERATED for p in fresh.glob(g)}
        have = {p.name for g in GENERATED for p in PACKAGE.glob(g)}
        bad = sorted(want ^ have)
        bad += [n for n in sorted(want & have)
                if not filecmp.cmp(fresh / n, PACKAGE / n, shallow=False)]
        return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files")
    if parser.parse_args().check:
        bad = stale()
        if bad:
            print("stale generated files (run: python proto/generate.py):", *bad, sep="\n  ")
            return 1
        return 0
    for g in GENERATED:
        for p in PACKAGE.glob(g):
            p.unlink()
    generate(HERE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
