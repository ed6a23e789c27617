"""The gRPC contract: generated modules match the .proto files, and every field is
documented where it is declared."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto" / "stockgate" / "v1"


def test_generated_modules_are_fresh():
    out = subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_generated_modules_import_under_the_stockgate_namespace():
    from stockgate.v1 import inventory_pb2_grpc, reservations_pb2, watch_pb2_grpc

    assert reservations_pb2.DESCRIPTOR.package == "stockgate.v1"
    assert hasattr(inventory_pb2_grpc, "InventoryStub")
    assert hasattr(watch_pb2_grpc, "WatchServicer")


def test_outcome_numbers_are_the_engines():
    from stockgate.engine import Outcome, State
    from stockgate.v1 import types_pb2

    for o in Outcome:
        assert types_pb2.Outcome.Value(f"OUTCOME_{o.name}") == int(o)
    for s in State:
        assert types_pb2.State.Value(f"STATE_{s.name}") == int(s)
    assert len(types_pb2.Outcome.keys()) == len(Outcome)


FIELD = re.compile(r"^\s*(repeated\s+|map<[^>]+>\s+)?([\w.]+)\s+(\w+)\s*=\s*\d+;")
NUMERIC = {"int32", "int64", "uint64"}


def test_every_number_and_list_field_says_its_unit_or_limit():
    # Strings follow the package-wide id limits in types.proto's header; a number or a
    # list needs its own comment, on its line or just above it.
    missing = []
    for proto in sorted(PROTO_DIR.glob("*.proto")):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            m = FIELD.match(line)
            if not m or "//" in line:
                continue
            kind, typ = m.group(1) or "", m.group(2)
            if typ not in NUMERIC and not kind:
                continue
            if lines[i - 1].strip().startswith("//"):
                continue
            missing.append(f"{proto.name}:{i + 1}: {line.strip()}")
    assert not missing, "\n".join(missing)
