"""Server subprocesses for the bench, and the CPU time they spend, read the same way for
every system: the sum over every thread of the server's process tree of
/proc/<pid>/task/<tid>/schedstat (ns of CPU, not clock ticks), plus what the children it
has reaped spent (/proc/<pid>/stat's cutime and cstime, in clock ticks): a process forked
and gone within a measurement, such as Redis's AOF rewrite, counts too. A driver's own
CPU never counts, and PostgreSQL's backends, WAL writer and checkpointer count as Redis's
background threads and stockgate's writer thread do.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SERVER_START_S_MAX = 60
SERVER_STOP_S_MAX = 30


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of one process and of the children it has reaped, in ns
    (0 when it is gone)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        # Past the command's closing parenthesis: field 3 (state) onwards.
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    cutime, cstime = int(stat[13]), int(stat[14])  # fields 16 and 17
    total = (cutime + cstime) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass  # the thread ended between listing and reading
    return total


def status_kb(pid: int | str, field: str) -> int:
    """A memory figure of /proc/<pid>/status in KiB (VmRSS, VmHWM, RssAnon...); pid may
    be "self"; 0 when the field is absent."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def machine_cpu_s() -> float:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat:
    user, nice, system, irq, softirq, steal), whoever ran: read around a measurement, it
    shows how much CPU processes other than the bench's took meanwhile."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct children of a process (from /proc/<pid>/task/*/children)."""
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                out.extend(int(c) for c in (task / "children").read_text().split())
            except (FileNotFoundError, ProcessLookupError):
                pass
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    seen = [pid]
    i = 0
    while i < len(seen):
        seen.extend(children(seen[i]))
        i += 1
    return seen


class CpuMeter:
    """CPU of a process tree between two readings. Processes that start in between count
    from zero; one that ends in between loses what it spent since the first reading
    (the bench keeps its connections open across a measurement, so none does)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._start: dict[int, int] = {}

    def _read(self) -> dict[int, int]:
        return {p: cpu_ns(p) for p in tree(self.pid)}

    def start(self) -> None:
        self._start = self._read()

    def stop_ns(self) -> int:
        now = self._read()
        return sum(max(0, ns - self._start.get(p, 0)) for p, ns in now.items())


class Served:
    """A server subprocess that prints its address (host:port) on stdout when ready."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None,
                 address_pattern: str = r"(127\.0\.0\.1:\d+)") -> None:
        self.argv = argv
        # stderr goes to a file, not a pipe: a pipe nobody reads would block the server
        # once its log filled it.
        self.log = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.log,
                                     text=True, env=env)
        deadline = time.monotonic() + SERVER_START_S_MAX
        self.address = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait()
                raise RuntimeError(f"server exited: {argv}\n{self.stderr_text()}")
            m = re.search(address_pattern, line)
            if m and not m.group(1).endswith(":0"):
                self.address = m.group(1)
                break
        if not self.address:
            self.proc.kill()
            raise RuntimeError(f"server did not print its address in time: {argv}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> int | None:
        """SIGTERM, then wait for a clean exit (SIGKILL past SERVER_STOP_S_MAX)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(SERVER_STOP_S_MAX)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        return self.proc.returncode

    def stderr_text(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()


def free_port() -> int:
    """A TCP port free on loopback now (for servers that cannot be told to pick one)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
