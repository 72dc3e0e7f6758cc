"""droptrace run in agents through `kubectl exec`, and what they print relayed: one agent's
output as it comes, or several merged line by line with the node on each line.

kubectl, not lightkube, runs the exec: a kubectl plugin can count on kubectl, and kubectl
speaks every credential the user's kubeconfig may hold (lightkube refuses `auth-provider`),
whereas lightkube's exec (websockets) is recent: the lightkube>=0.17 droptrace accepts
need not have it.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO

from tracer.errors import KubectlMissing
from tracer.kubectl.cluster import AGENT_CONTAINER, AGENT_NAMESPACE, Agent

# `kubectl exec` does not end the remote process when kubectl ends (kubernetes/kubernetes
# #89031): every Ctrl-C would leave a droptrace, with its BPF program attached, in the agent.
# So droptrace runs beside a POSIX sh watchdog that sends it SIGTERM (which droptrace takes
# as Ctrl-C: it detaches and prints its summary) once stdin closes. kubectl -i keeps that
# stdin open for as long as we hold our end and closes it when we let go; the runtime should
# close it too when kubectl or its connection dies. A background job's stdin is /dev/null
# in sh, hence fd 3.
WATCHDOG = (
    "exec 3<&0; { cat <&3 >/dev/null; kill -TERM $$; } >/dev/null 2>&1 & "
    'exec droptrace "$@" </dev/null 3<&-'
)
STOP_GRACE_S = 10.0  # for the agents to detach and print their summaries
KILL_GRACE_S = 3.0


def exec_command(kubectl: str, agent: Agent, droptrace_args: Sequence[str]) -> list[str]:
    """`kubectl exec` of `droptrace ARGS` in the agent, under the stdin watchdog."""
    return [
        kubectl,
        "exec",
        "-i",
        "-n",
        AGENT_NAMESPACE,
        agent.name,
        "-c",
        AGENT_CONTAINER,
        "--",
        "sh",
        "-c",
        WATCHDOG,
        "droptrace",
        *droptrace_args,
    ]


@dataclass(frozen=True, slots=True)
class Ended:
    agent: Agent
    returncode: int
    stopped: bool  # ended because we asked it to (Ctrl-C, SIGTERM, our output closed)

    @property
    def failed(self) -> bool:
        return self.returncode != 0 and not self.stopped


@dataclass
class _Child:
    agent: Agent
    proc: subprocess.Popen[bytes]
    readers: list[threading.Thread]
    stopped: bool = False  # we asked it to end
    done: bool = False  # it ended and every line it printed is out
    told: bool = False  # on_end has heard of it


class _Relay:
    """Lines of every child onto our stdout/stderr, whole lines, with the node on each.
    Bytes in, bytes out: a child's output is never lost to our locale's encoding."""

    def __init__(self, as_json: bool) -> None:
        self._json = as_json
        self._lock = threading.Lock()
        self.closed = threading.Event()  # our stdout went away: time to stop

    def out(self, node: str, raw: bytes) -> None:
        if not self._json:
            self._write(sys.stdout.buffer, node, raw)
            return
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            obj["node"] = node
            self._write(sys.stdout.buffer, None, json.dumps(obj, separators=(",", ":")).encode())
        else:  # not a drop: stdout stays JSON lines only
            self._write(sys.stderr.buffer, node, raw)

    def err(self, node: str, raw: bytes) -> None:
        self._write(sys.stderr.buffer, node, raw)

    def _write(self, stream: IO[bytes], node: str | None, line: bytes) -> None:
        prefix = f"[{node}] ".encode() if node is not None else b""
        with self._lock:
            try:
                stream.write(prefix + line.rstrip(b"\n") + b"\n")
                stream.flush()
            except (BrokenPipeError, ValueError):
                self.closed.set()


def _pump(pipe: IO[bytes], node: str, emit: Callable[[str, bytes], None]) -> None:
    with pipe:
        for raw in pipe:
            emit(node, raw)


class Streams:
    """kubectl children, one per agent. `merge`: relay their lines tagged with the node;
    else they write to our stdout and stderr directly (one agent)."""

    def __init__(self, merge: bool, as_json: bool) -> None:
        self._merge = merge
        self._relay = _Relay(as_json)
        self._children: list[_Child] = []
        self._wake = threading.Event()  # a child ended

    def start(self, agent: Agent, command: list[str]) -> None:
        """Start one child; KubectlMissing when kubectl cannot run."""
        pipe = subprocess.PIPE if self._merge else None
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,  # held open: its end is the remote droptrace's end
                stdout=pipe,
                stderr=pipe,
                # Its own session: a Ctrl-C at the terminal reaches only us, and we stop each
                # child through its stdin, so the agents print their summaries.
                start_new_session=True,
            )
        except OSError as err:
            raise KubectlMissing(f"cannot run {command[0]}: {err}") from None
        child = _Child(agent, proc, [])
        # Known at once: a Ctrl-C from here on (its first lines may already be out) stops it.
        self._children.append(child)
        try:
            if self._merge:
                assert proc.stdout is not None and proc.stderr is not None
                for pipe_, emit in (
                    (proc.stdout, self._relay.out),
                    (proc.stderr, self._relay.err),
                ):
                    t = threading.Thread(target=_pump, args=(pipe_, agent.node, emit), daemon=True)
                    t.start()
                    child.readers.append(t)
        finally:  # also on a Ctrl-C meanwhile: without its waiter, a stop waits out its graces
            threading.Thread(target=self._wait, args=(child,), daemon=True).start()

    def _wait(self, child: _Child) -> None:
        child.proc.wait()
        for t in child.readers:
            t.join()  # every line it printed is out before it counts as ended
        self._close_stdin(child)
        child.done = True
        self._wake.set()

    @staticmethod
    def _close_stdin(child: _Child) -> None:
        with contextlib.suppress(OSError):
            if child.proc.stdin is not None:
                child.proc.stdin.close()

    def run(
        self,
        commands: list[tuple[Agent, list[str]]],
        on_end: Callable[[Ended], None] = lambda _e: None,
    ) -> list[Ended]:
        """Start a child per command, then wait until every one has ended, telling `on_end`
        of each as it ends. Ctrl-C (KeyboardInterrupt) or our output closing stops them
        all, gracefully first, also while they are being started; so does a child that
        cannot start, whose error is raised once the others have stopped."""
        try:
            for agent, command in commands:
                self.start(agent, command)
            while self._running():
                if self._relay.closed.is_set():
                    self._stop(on_end)
                    break
                self._collect(0.2, on_end)
        except KeyboardInterrupt:
            self._stop(on_end)
        except BaseException:
            self._stop(on_end)
            raise
        self._tell(on_end)  # those that ended after the last look
        return [_ended(c) for c in self._children]

    def _running(self) -> list[_Child]:
        return [c for c in self._children if not c.done]

    def _collect(self, seconds: float, on_end: Callable[[Ended], None]) -> None:
        """Wait up to `seconds` for the children to end; tell of each that did, once."""
        deadline = time.monotonic() + seconds
        while True:
            self._wake.clear()
            self._tell(on_end)
            left = deadline - time.monotonic()
            if not self._running() or left <= 0:
                return
            self._wake.wait(min(left, 0.2))

    def _tell(self, on_end: Callable[[Ended], None]) -> None:
        for c in self._children:
            if c.done and not c.told:
                c.told = True
                on_end(_ended(c))

    def _stop(self, on_end: Callable[[Ended], None]) -> None:
        for c in self._running():
            c.stopped = True
            self._close_stdin(c)  # the watchdog in the agent sends droptrace SIGTERM
        with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: no more waiting
            self._collect(STOP_GRACE_S, on_end)
        for signal_child in (subprocess.Popen.terminate, subprocess.Popen.kill):
            for c in self._running():
                with contextlib.suppress(ProcessLookupError):
                    signal_child(c.proc)
            with contextlib.suppress(KeyboardInterrupt):
                self._collect(KILL_GRACE_S, on_end)


def _ended(c: _Child) -> Ended:
    return Ended(c.agent, _code(c.proc.returncode), c.stopped)


def _code(rc: int | None) -> int:
    """A child killed by a signal as the shell shows it (128 + signal)."""
    if rc is None:
        return 1
    return 128 - rc if rc < 0 else rc
