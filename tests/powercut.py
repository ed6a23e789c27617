"""A power cut, modelled on one file: what a disk that honours fsync holds after losing
power at an instant, built from the undo log tests/powercut_shim.c keeps.

    shim = build_shim(tmp_dir)                      # None when no C compiler is found
    env = shim_env(shim, data_file, log_path)       # for the process that writes
    ... kill -9 that process ...
    lost = cut_power(data_file, log_path, "all")    # or "random", with an rng

"all" drops every write not made durable; "random" keeps an arbitrary subset of them,
page by page (a write may be torn at any page boundary, and later pages may land while
earlier ones do not), which is what a disk may do with its write cache when the power
goes. Neither can model a disk that acknowledges a flush it never did.
"""

from __future__ import annotations

import os
import pathlib
import random
import shutil
import struct
import subprocess
from dataclasses import dataclass

SHIM_SOURCE = pathlib.Path(__file__).with_name("powercut_shim.c")
MAGIC = 0x54554350
TRAILER = 0x444E4521
KIND_UNDO = 1
KIND_DURABLE = 2
HEAD = struct.Struct("<IIQQQQ")  # magic, kind, offset, length, old size, bytes saved
TAIL = struct.Struct("<I")
TEAR_BYTES = 4096  # a disk persists whole pages of this size, or not at all (LMDB's page)
LOSS_MODES = ("all", "random")


def build_shim(dest_dir: str | os.PathLike[str]) -> pathlib.Path | None:
    """Compile the shim into dest_dir; None when there is no C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out = pathlib.Path(dest_dir) / "powercut_shim.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(SHIM_SOURCE), "-ldl",
                    "-lpthread"], check=True, capture_output=True)
    return out


def shim_env(shim: pathlib.Path, data_file: str | os.PathLike[str],
             log_path: str | os.PathLike[str]) -> dict[str, str]:
    """Environment variables that make a process keep the undo log of data_file."""
    return {"LD_PRELOAD": str(shim), "POWERCUT_FILE": os.path.realpath(data_file),
            "POWERCUT_LOG": os.path.abspath(log_path)}


@dataclass
class Write:
    kind: int
    offset: int
    length: int
    old_size: int
    data: bytes  # old bytes (KIND_UNDO) or new bytes (KIND_DURABLE)


def read_log(log_path: str | os.PathLike[str]) -> list[Write]:
    """The complete records of the log, in order (a record torn by the kill is the last
    one, and its write never happened: it is dropped)."""
    try:
        raw = pathlib.Path(log_path).read_bytes()
    except FileNotFoundError:
        return []
    out: list[Write] = []
    at = 0
    while at + HEAD.size <= len(raw):
        magic, kind, offset, length, old_size, saved = HEAD.unpack_from(raw, at)
        end = at + HEAD.size + saved
        if magic != MAGIC or end + TAIL.size > len(raw):
            break
        if TAIL.unpack_from(raw, end)[0] != TRAILER:
            break
        out.append(Write(kind, offset, length, old_size, raw[at + HEAD.size:end]))
        at = end + TAIL.size
    return out


@dataclass
class PowerCut:
    """What one cut did: writes undone whole or in part, pages kept, bytes of the file."""

    writes_pending: int
    pages_lost: int
    pages_kept: int
    size_before: int
    size_after: int


def cut_power(data_file: str | os.PathLike[str], log_path: str | os.PathLike[str],
              loss: str = "all", rng: random.Random | None = None) -> PowerCut:
    """Turn data_file (written by a process killed since) into what the disk would hold
    had the power gone at the kill. Call it with no process using the file."""
    if loss not in LOSS_MODES:
        raise ValueError(f"loss must be one of {LOSS_MODES}")
    rng = rng or random.Random(0)
    writes = read_log(log_path)
    pending = [w for w in writes if w.kind == KIND_UNDO]
    size_before = os.path.getsize(data_file)
    # Pages of the pending writes, newest first, each kept (it reached the disk) or lost.
    pages: list[tuple[int, int, Write, bool]] = []  # (start, end, write, kept)
    for w in pending:
        for start in range(w.offset, w.offset + w.length, TEAR_BYTES):
            end = min(start + TEAR_BYTES, w.offset + w.length)
            kept = loss == "random" and rng.random() < 0.5
            pages.append((start, end, w, kept))
    size = size_before
    if pending:
        # The file is as long as the disk knew it before the first pending write, or as
        # far as a kept page reaches.
        size = min(w.old_size for w in pending)
        size = max([size] + [end for start, end, _, kept in pages if kept])
    with open(data_file, "r+b") as f:
        newer_kept: list[tuple[int, int]] = []
        for start, end, w, kept in reversed(pages):
            if kept:
                newer_kept.append((start, end))
                continue
            if any(s < end and start < e for s, e in newer_kept):
                continue  # a later write of these bytes reached the disk: it stands
            old = w.data[start - w.offset:end - w.offset]  # b"" past the old end
            if old:
                f.seek(start)
                f.write(old)
            if len(old) < end - start and end <= size:
                f.seek(start + len(old))
                f.write(bytes(end - start - len(old)))  # never written: a hole reads 0
        f.truncate(size)
        for w in writes:
            if w.kind == KIND_DURABLE:
                f.seek(w.offset)
                f.write(w.data)
        f.flush()
        os.fsync(f.fileno())
    os.unlink(log_path)
    kept_n = sum(1 for p in pages if p[3])
    return PowerCut(len(pending), len(pages) - kept_n, kept_n, size_before,
                    os.path.getsize(data_file))
