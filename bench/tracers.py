"""The configurations the bench compares: each starts before a storm and stops after it.

Every tracer runs as its own process; its CPU time and peak RSS come from wait4(2), so
they are the kernel's figures for that process alone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import floor
from bench.topology import Topology

READY_TIMEOUT = 60.0


@dataclass
class Outcome:
    cpu_seconds: float = 0.0
    peak_rss_kb: int = 0
    startup_seconds: float = 0.0  # launch to ready ("tracing with")
    summary: dict[str, Any] = field(default_factory=dict)  # droptrace's --summary-json


class Tracer:
    """No tracer: the baseline."""

    name = "baseline"
    sees_storm = True  # droptrace's count for the router must equal the kernel's (else 0)

    def start(self, topo: Topology) -> None:
        pass

    def stop(self) -> Outcome:
        return Outcome()


def _sigint_default() -> None:
    """A shell's background job inherits SIGINT ignored, and would then ignore our stop."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class _Process(Tracer):
    """A tracer process, ready once `ready` appears in the file its output goes to."""

    ready = ""

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="dtbench-", dir="/dev/shm"))
        self._log = self._dir / "log"
        self._startup = 0.0

    def command(self, topo: Topology) -> list[str]:
        raise NotImplementedError

    def is_ready(self) -> bool:
        return self.ready in self._log.read_text(errors="replace")

    def start(self, topo: Topology) -> None:
        launched = time.monotonic()
        with self._log.open("wb") as log:
            self._proc = subprocess.Popen(
                self.command(topo),
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
                preexec_fn=_sigint_default,
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while not self.is_ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log_text = self._log.read_text(errors="replace")[-2000:]
                self.kill()
                raise RuntimeError(f"{self.name} did not start: {log_text}")
            time.sleep(0.01)
        self._startup = time.monotonic() - launched

    def stop(self) -> Outcome:
        """SIGINT (so it ends cleanly and summarises), then wait4 for its rusage."""
        assert self._proc is not None
        if self._proc.poll() is not None:
            log_text = self._log.read_text(errors="replace")[-2000:]
            self.cleanup()
            raise RuntimeError(
                f"{self.name} ended during the storm (exit {self._proc.returncode}): {log_text}"
            )
        self._proc.send_signal(signal.SIGINT)
        timer = threading.Timer(30, self.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(self._proc.pid, 0)
        finally:
            timer.cancel()
        self._proc.returncode = os.waitstatus_to_exitcode(status)
        out = Outcome(ru.ru_utime + ru.ru_stime, ru.ru_maxrss, self._startup)
        self.collect(out)
        self.cleanup()
        return out

    def collect(self, out: Outcome) -> None:
        pass

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self.cleanup()

    def cleanup(self) -> None:
        for p in self._dir.glob("*"):
            p.unlink(missing_ok=True)
        self._dir.rmdir() if self._dir.exists() else None


# The bench's own recorder pins: never the recorder someone left running on the machine.
PIN_DIR = f"/sys/fs/bpf/droptrace-bench-{os.getpid()}"


def droptrace_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "tracer", *args]


def _droptrace(*args: str, check: bool) -> None:
    env = dict(os.environ, DROPTRACE_PIN_DIR=PIN_DIR)
    subprocess.run(droptrace_cmd(*args), capture_output=True, check=check, env=env)


class Live(_Process):
    """droptrace's live stream, every drop on the host, JSON to /dev/null."""

    name = "live"
    ready = "tracing with"

    def extra(self, topo: Topology) -> list[str]:
        return []

    def command(self, topo: Topology) -> list[str]:
        self._summary = self._dir / "summary.json"
        return droptrace_cmd("--json", "--summary-json", str(self._summary), *self.extra(topo))

    def collect(self, out: Outcome) -> None:
        if self._summary.exists():
            out.summary = json.loads(self._summary.read_text())


class Filtered(Live):
    """droptrace watching a namespace that sees none of the storm."""

    name = "filtered"
    sees_storm = False

    def extra(self, topo: Topology) -> list[str]:
        return ["--netns", topo.bystander]


class Record(Tracer):
    """The flight recorder: pinned in the kernel, no process runs during the storm."""

    name = "record"

    def start(self, topo: Topology) -> None:
        _droptrace("record", check=True)

    def stop(self) -> Outcome:
        _droptrace("stop", check=True)
        return Outcome()


class BpftraceCount(_Process):
    name = "bpftrace-count"
    program = "tracepoint:skb:kfree_skb { @[args->reason] = count(); }"

    def is_ready(self) -> bool:
        return (self._dir / "ready").exists()

    def command(self, topo: Topology) -> list[str]:
        # BEGIN fires once every probe is attached; its stdout is buffered (not a terminal),
        # so it leaves a file instead (system() needs --unsafe).
        begin = f'BEGIN {{ system("touch {self._dir}/ready"); }} '
        return ["bpftrace", "--unsafe", "-e", begin + self.program]


class BpftracePrint(BpftraceCount):
    name = "bpftrace-print"
    program = (
        'tracepoint:skb:kfree_skb { printf("%d %p %p\\n", args->reason, args->location, '
        "args->skbaddr); }"
    )


class EmptyProgram(_Process):
    """An empty program on droptrace's tracepoint (bench/floor.py): the hook's own cost, the
    floor under `filtered`."""

    name = "empty-program"
    ready = "ready"

    def start(self, topo: Topology) -> None:
        self._object = floor.build(self._dir)
        super().start(topo)

    def command(self, topo: Topology) -> list[str]:
        return [sys.executable, "-m", "bench.floor", str(self._object)]


DROPTRACE = (Live, Filtered, Record)
REFERENCES = (EmptyProgram,)
PEERS = (BpftraceCount, BpftracePrint)


def cleanup_leftovers() -> None:
    """The bench's recorder, if a run was interrupted while it was pinned."""
    _droptrace("stop", check=False)
