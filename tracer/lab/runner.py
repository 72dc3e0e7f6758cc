"""Build, break, watch and tear down a lab scenario in network namespaces.

A scenario's topology.sh builds the healthy node(s), its fault.sh (shared with the Vagrant
lab) breaks them, its traffic.sh sends the failing packets. Everything lives in namespaces
named PREFIX<role>; deleting them (and the processes in them) removes every link and rule.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tracer import session
from tracer.errors import DroptraceError, UsageError
from tracer.lab import LAB_PREFIX, labpods
from tracer.lab.scenarios import SCENARIOS, Scenario, by_name, scenario_dir
from tracer.model.tracing import Filters, Summary
from tracer.pipeline import Pipeline
from tracer.session import Limits
from tracer.sinks import Sink
from tracer.system import netns

_SETTLE_S = 1.0  # after the traffic: time for the last drops to reach the ring buffer


class LabError(DroptraceError):
    pass


class UnknownScenario(UsageError):
    pass


def scenario(name: str) -> Scenario:
    try:
        return by_name(name)
    except KeyError:
        known = ", ".join(s.name for s in SCENARIOS)
        raise UnknownScenario(f"unknown lab scenario {name!r} (one of: {known})") from None


def check_prefix(prefix: str) -> str:
    if not prefix.startswith(LAB_PREFIX):
        raise UsageError(f"a lab prefix must start with {LAB_PREFIX!r}, so `lab down` finds it")
    return prefix


def _script(path: Path, *args: str, env: dict[str, str], ns: str | None = None) -> None:
    cmd = ["bash", str(path), *args]
    if ns is not None:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    p = subprocess.run(cmd, env=dict(os.environ, **env), capture_output=True, text=True)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise LabError(f"{path.parent.name}/{path.name} {' '.join(args)} failed: {last}")


def lab_namespaces(prefix: str = LAB_PREFIX) -> list[str]:
    found: set[str] = set()
    for d in netns.NETNS_DIRS:
        try:
            found.update(p.name for p in d.iterdir() if p.name.startswith(prefix))
        except OSError:
            continue
    return sorted(found)


def down(prefix: str = LAB_PREFIX) -> list[str]:
    """Remove every lab namespace with this prefix, killing what still runs inside first,
    and the pods' cgroups and kubelet directories (lib.sh mkpod)."""
    removed = []
    for name in lab_namespaces(prefix):
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
        for pid in pids.stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        removed.append(name)
    labpods.remove(prefix)
    return removed


def up(s: Scenario, prefix: str = LAB_PREFIX, progress: Callable[[str], None] = print) -> list[str]:
    """Build the scenario's topology and inject its fault; returns its namespace names."""
    down(prefix)
    env = {"LAB_PREFIX": prefix}
    d = scenario_dir(s.name)
    progress(f"building {s.name}: {', '.join(prefix + r for r in s.namespaces)}")
    _script(d / "topology.sh", env=env)
    progress(f"injecting the fault on {prefix}{s.fault_node}")
    _script(d / "fault.sh", "inject", env=dict(env, **dict(s.fault_env)), ns=prefix + s.fault_node)
    return [prefix + r for r in s.namespaces]


def up_explained(
    s: Scenario, prefix: str = LAB_PREFIX, progress: Callable[[str], None] = print
) -> list[str]:
    """`lab up`: build the scenario, or leave nothing if that fails; returns what to tell
    the user about exploring it."""
    try:
        names = up(s, prefix, progress)
    except BaseException:
        down(prefix)
        raise
    lines = [
        f"up: {' '.join(names)}; traffic: bash {scenario_dir(s.name)}/traffic.sh "
        f"(LAB_PREFIX={prefix}); `droptrace lab down` removes it"
    ]
    pods = labpods.refs(prefix)
    if pods:
        namespace, name = pods[0].split("/")
        lines.append(
            f"pods: {' '.join(pods)}, named from node-local facts (kubelet dirs under "
            f"{labpods.lab_root()}); e.g. `droptrace --pod {name} -n {namespace}`"
        )
    return lines


def send_traffic(s: Scenario, prefix: str) -> None:
    _script(scenario_dir(s.name) / "traffic.sh", env={"LAB_PREFIX": prefix})


class Traffic:
    """Sends a scenario's traffic in a thread once tracing is ready, then ends the session."""

    def __init__(self, s: Scenario, prefix: str) -> None:
        self._scenario, self._prefix = s, prefix
        self.done = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        threading.Thread(target=self._work, name="lab-traffic", daemon=True).start()

    def _work(self) -> None:
        try:
            send_traffic(self._scenario, self._prefix)
            time.sleep(_SETTLE_S)
        except BaseException as exc:  # re-raised in the caller's thread by check()
            self._error = exc
        finally:
            self.done.set()

    def check(self) -> None:
        if self._error is not None:
            raise self._error


def watch(
    s: Scenario,
    prefix: str,
    pipeline: Pipeline,
    sink: Sink,
    progress: Callable[[str], None] = print,
    timeout_s: float = 60.0,
) -> Summary:
    """Build the scenario, trace its namespaces while its traffic runs, and tear it down."""
    try:
        names = up(s, prefix, progress)
        filters = Filters(netns=tuple(netns.resolve(n).inode for n in names))
        traffic = Traffic(s, prefix)
        progress("sending the failing traffic")
        summary = session.run(
            filters,
            pipeline,
            sink,
            Limits(duration=timeout_s, stop=traffic.done),
            on_ready=traffic.start,
        )
        traffic.check()
        return summary
    finally:
        removed = down(prefix)
        progress(f"removed {len(removed)} lab namespaces")
