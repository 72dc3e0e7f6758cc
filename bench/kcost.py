"""What one drop costs droptrace's kfree_skb program, in ns, from the kernel's BPF stats.

`python -m bench.kcost` (root) builds the bench topology, turns `kernel.bpf_stats_enabled`
on (and back to what it was), and for each configuration starts droptrace, sends a storm
and reads run_time_ns / run_cnt of that droptrace's own program (found by the fds its
process holds, so other droptrace runs on the machine do not count). It includes the
stats' own clock reads: droptrace's program made to return at its first line measured 43 ns
on the project's VM (2026-11-30, beside the filtered path's 49.5 ns).

The same program varies by up to ~10 ns/run from one load to the next there (with where
the kernel puts its JIT image, and which program on the tracepoint runs first and so meets
the packet's data cold), so one run compares badly with another. `--beside DIR` runs the
droptrace of another checkout (built with `make bpf`) on the same storms, the two started in
alternating order each round: compare the medians of that.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import IO

from bench import topology
from bench.tracers import READY_TIMEOUT, _sigint_default, droptrace_cmd

STATS_SYSCTL = Path("/proc/sys/kernel/bpf_stats_enabled")
PROGRAM_PREFIX = "kfree_skb_"


def configs(topo: topology.Topology) -> dict[str, list[str]]:
    """Name -> droptrace arguments. "filtered-*" match none of the storm, the rest all."""
    return {
        "filtered-netns": ["--netns", topo.bystander],
        "filtered-ip": ["--ip", "198.19.250.1/32"],  # as --pod: an address the storm never has
        "matched-netns": ["--netns", topo.router],
        "live": [],
    }


def _prog_ids_of(pid: int) -> set[int]:
    """Program ids that process `pid` holds a program or link fd of (its fdinfo)."""
    held: set[int] = set()
    for info in Path(f"/proc/{pid}/fdinfo").glob("*"):
        try:
            text = info.read_text()
        except OSError:
            continue  # the fd closed meanwhile
        held.update(int(ln.split()[1]) for ln in text.splitlines() if ln.startswith("prog_id:"))
    return held


def run_stats(pid: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of the kfree_skb program process `pid` holds."""
    out = subprocess.run(
        ["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True
    ).stdout
    held = _prog_ids_of(pid)
    for p in json.loads(out or "[]"):
        if p.get("name", "").startswith(PROGRAM_PREFIX) and p.get("id") in held:
            return int(p.get("run_time_ns", 0)), int(p.get("run_cnt", 0))
    raise RuntimeError(f"no {PROGRAM_PREFIX}* program held by pid {pid}")


def _text(f: IO[bytes]) -> bytes:
    f.seek(0)
    return f.read()


def _start(args: list[str], cwd: str | None, log: IO[bytes]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        droptrace_cmd("--json", *args), stdout=subprocess.DEVNULL, stderr=log, cwd=cwd,
        start_new_session=True, preexec_fn=_sigint_default,
    )  # fmt: skip
    deadline = time.monotonic() + READY_TIMEOUT
    while b"tracing with" not in _text(log):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            raise RuntimeError(f"droptrace did not start: {_text(log)[-2000:]!r}")
        time.sleep(0.05)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def measure(
    topo: topology.Topology,
    args: list[str],
    checkouts: dict[str, str | None],
    shape: str,
    packets: int,
    seconds: float,
) -> tuple[dict[str, float], int, float]:
    """One storm under a droptrace from each checkout (label -> directory, None: this one),
    started in the given order: ({label: ns per run}, runs, pps)."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    with ExitStack() as stack:
        for label, cwd in checkouts.items():
            log = stack.enter_context(tempfile.TemporaryFile())
            procs[label] = _start(args, cwd, log)
            stack.callback(_stop, procs[label])
        before = {label: run_stats(p.pid) for label, p in procs.items()}
        pps = topology.storm(topo, shape, packets, seconds)
        after = {label: run_stats(p.pid) for label, p in procs.items()}
    out, runs = {}, 0
    for label in procs:
        runs = after[label][1] - before[label][1]
        out[label] = (after[label][0] - before[label][0]) / runs if runs else 0.0
    return out, runs, pps


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kcost", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0, help="storm length (upper bound)")
    p.add_argument("--packets", type=int, default=2_000_000, help="storm size (upper bound)")
    p.add_argument("--shapes", default="one,many")
    p.add_argument("--only", default="", help="comma-separated configuration names")
    p.add_argument("--prefix", default=f"dtkcost{os.getpid()}-", help="namespace name prefix")
    p.add_argument("--beside", metavar="DIR", help="another checkout's droptrace, side by side")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench.kcost: run as root (BPF and network namespaces)", file=sys.stderr)
        return 1
    checkouts: dict[str, str | None] = {"this": None}
    if args.beside:
        checkouts["beside"] = str(Path(args.beside).resolve())
    was = STATS_SYSCTL.read_text().strip()
    topo = topology.build(args.prefix)
    results: dict[str, list[float]] = {}
    try:
        STATS_SYSCTL.write_text("1")
        chosen = {
            k: v for k, v in configs(topo).items() if not args.only or k in args.only.split(",")
        }
        for r in range(args.rounds):
            # Alternate which starts (and runs) first: the first meets the packet's data cold.
            order = dict(reversed(checkouts.items())) if r % 2 else checkouts
            for shape in args.shapes.split(","):
                for name, dt_args in chosen.items():
                    ns, runs, pps = measure(topo, dt_args, order, shape, args.packets, args.seconds)
                    for label, v in ns.items():
                        results.setdefault(f"{shape:4} {name:15} {label}", []).append(v)
                    each = "  ".join(f"{label} {v:6.1f}" for label, v in ns.items())
                    print(
                        f"round {r + 1} {shape:4} {name:15} ns/run {each}  {runs:>9,} runs"
                        f"  {pps:>10,.0f} pps",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        STATS_SYSCTL.write_text(was)
        topology.teardown(topo)
    print(f"{'shape configuration':31} median ns/run (min-max), load average {os.getloadavg()[0]}")
    for key, runs_ns in sorted(results.items()):
        print(f"{key:31} {statistics.median(runs_ns):7.1f} ({min(runs_ns):.1f}-{max(runs_ns):.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
