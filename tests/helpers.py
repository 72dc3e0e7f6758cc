"""Real network namespaces and a real droptrace process, owned by the test that makes them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any, ClassVar

_seq = count()
MakeNetns = Callable[[str], str]
LabUp = Callable[[str], str]  # the lab_up fixture: scenario -> its prefix
# How many times slower than the host this runs: an emulated kernel of `make test-kernels`.
SLOW = float(os.environ.get("DROPTRACE_TEST_SLOW", "1"))
# Also there: the time (time.time()) by which every wait gives up, leaving the rest of the
# kernel's budget for pytest to report; a slow machine then takes longer, not fails.
DEADLINE = float(os.environ.get("DROPTRACE_TEST_DEADLINE") or 0) or None
# A file that gets droptrace's output as it arrives: what it said when a case hangs.
_LOG = os.environ.get("DROPTRACE_TEST_LOG")
_log_lock = threading.Lock()


def patience(seconds: float) -> float:
    """How long to wait for what takes up to `seconds` on the host: scaled by SLOW, or in a
    `make test-kernels` guest as long as the kernel's budget allows."""
    if DEADLINE is not None:
        return max(DEADLINE - time.time(), 1.0)
    return seconds * SLOW


def sh(*args: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def unique_name(tag: str) -> str:
    """Namespace names that never collide between tests or concurrent runs."""
    return f"dt-{tag}-{os.getpid() % 100000}-{next(_seq)}"


def lab_prefix() -> str:
    """A `droptrace lab` namespace prefix of this test alone."""
    return "dtlab-" + unique_name("t").removeprefix("dt-") + "-"


def k8s_ns(prefix: str) -> str:
    """The lab's Kubernetes namespace (lib.sh lab_k8s_ns)."""
    return prefix.removesuffix("-")


def lab_pod_uid(prefix: str, role: str) -> str:
    """The UID of lab pod `role` (its kubelet directory's name), for an API to serve it."""
    from tracer.lab import labpods

    for d in labpods.pod_dirs(prefix):
        if f"netns={prefix}{role}\n" in (d / labpods.MARKER).read_text():
            return d.name
    raise AssertionError(f"no lab pod {role}")


def send_udp(
    ns: str, dst: str, port: int, n: int = 3, src: str | None = None, size: int = 0
) -> None:
    """n UDP datagrams from namespace ns; bounded, never waits for an answer."""
    payload = f"b'x' * {size}" if size else "b'droptrace'"
    bind = f"s.bind(({src!r}, 0));" if src else ""
    family = "AF_INET6" if ":" in dst else "AF_INET"
    code = (
        f"import socket; s=socket.socket(socket.{family}, socket.SOCK_DGRAM);"
        f"{bind}[s.sendto({payload}, ({dst!r}, {port})) for _ in range({n})]"
    )
    sh(sys.executable, "-c", code, ns=ns)


@contextmanager
def background(ns: str, code: str) -> Iterator[subprocess.Popen[str]]:
    """Python `code` running in namespace ns for the length of the block, then killed."""
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def send_df(ns: str, dst: str, port: int, size: int, n: int = 2) -> None:
    """n UDP datagrams of `size` payload bytes with DF set, whatever path MTU the sender has
    learnt (IP_PMTUDISC_PROBE): each one reaches the link that is too small for it."""
    family = "AF_INET6" if ":" in dst else "AF_INET"
    level, opt = ("IPPROTO_IPV6", 23) if ":" in dst else ("IPPROTO_IP", 10)  # *_MTU_DISCOVER
    code = (
        f"import socket; s=socket.socket(socket.{family}, socket.SOCK_DGRAM);"
        f"s.setsockopt(socket.{level}, {opt}, 3);"  # IP_PMTUDISC_PROBE
        f"[s.sendto(b'x' * {size}, ({dst!r}, {port})) for _ in range({n})]"
    )
    sh(sys.executable, "-c", code, ns=ns)


def send_icmp_echo_reply(ns: str, dst: str, n: int = 2) -> None:
    """n ICMP echo replies nobody asked for: conntrack has no request for them (INVALID)."""
    code = (
        "import socket, struct;"
        "s=socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP);"
        "h=struct.pack('!BBHHH', 0, 0, 0, 4242, 1)+b'droptrace!';"
        "c=sum(struct.unpack('!9H', h));"
        "c=(c>>16)+(c&0xffff); c=~(c+(c>>16))&0xffff;"
        "p=h[:2]+struct.pack('!H', c)+h[4:];"
        f"[s.sendto(p, ({dst!r}, 0)) for _ in range({n})]"
    )
    sh(sys.executable, "-c", code, ns=ns)


@dataclass
class Result:
    rc: int
    events: list[dict[str, Any]]
    stderr: str
    stdout: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Droptrace:
    """`python -m tracer ARGS` (or `program ARGS`) in the background; ready once it says it
    is tracing.

    Threads drain stdout and stderr as lines arrive: a buffered readline() next to select()
    would hide lines already read into Python's buffer, and a full pipe would stall it.
    """

    READY = "tracing with"
    # Every instance of this test process, for a test report to show what each one said.
    launched: ClassVar[list[Droptrace]] = []

    def __init__(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        program: list[str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.case = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
        self.started = time.monotonic()
        self.startup: float | None = None  # seconds from launch to the READY line
        Droptrace.launched.append(self)
        self.proc = subprocess.Popen(
            [*(program or [sys.executable, "-m", "tracer"]), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
            cwd=cwd,
        )
        self._out: list[str] = []
        self._err: list[str] = []
        self._ready = threading.Event()
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _drain(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)
            if self.READY in line and into is self._err and self.startup is None:
                self.startup = time.monotonic() - self.started
                self._ready.set()
            if _LOG and into is self._err:
                with _log_lock, open(_LOG, "a") as f:
                    f.write(f"{self.case}\t{time.monotonic() - self.started:.1f}\t{line}")
        self._ready.set()  # EOF: the process ended (wait() tells whether it had started)

    def __enter__(self) -> Droptrace:
        self._ready.wait(timeout=patience(30))
        if not any(self.READY in line for line in self._err):
            rc = self.proc.poll()
            self.kill()
            waited = time.monotonic() - self.started
            how = f"ended with {rc}" if rc is not None else f"did not start in {waited:.0f} s"
            raise AssertionError(f"droptrace {how}: {self.stderr}")
        return self

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def wait_for(self, text: str, times: int = 1, timeout: float = 30) -> None:
        """Until stderr has shown `text` on `times` lines (e.g. several tracers started)."""
        deadline = time.monotonic() + timeout * SLOW
        while sum(text in line for line in list(self._err)) < times:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise AssertionError(f"no {times} x {text!r} in: {''.join(self._err)}")
            time.sleep(0.1)

    def wait_for_event(self, wanted: Callable[[dict[str, Any]], bool], timeout: float) -> bool:
        """Until a JSON event on stdout is `wanted` (True), or the process ends or the time
        is up (False): the wait follows droptrace's output, not a fixed time."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            lines = list(self._out)
            for line in lines[seen:]:
                if line.startswith("{") and wanted(json.loads(line)):
                    return True
            seen = len(lines)
            if self.proc.poll() is not None and len(self._out) == seen:
                return False
            time.sleep(0.1)
        return False

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 60) -> Result:
        self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=10)
        out = "".join(self._out)
        events = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return Result(self.proc.returncode, events, "".join(self._err), out)


def run_cli(*args: str, user: int | None = None, env: dict[str, str] | None = None) -> Result:
    cmd = [sys.executable, "-m", "tracer", *args]
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
    p = subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, env=dict(os.environ, **(env or {}))
    )
    return Result(p.returncode, [], p.stderr, p.stdout)


def loaded_droptrace_programs(settle: float = 5.0, at_most: int = 0) -> list[str]:
    """droptrace's BPF programs still loaded that no process holds (pinned or leaked).

    Programs a running process holds are not counted, nor those a recorder pinned outside
    this run's DROPTRACE_PIN_DIR (another test run's, a user's), so a test here is not failed
    by another droptrace on the machine. The kernel frees a program shortly after its last fd
    closes (deferred work), so this waits up to `settle` seconds for the count to drop to
    `at_most`.
    """
    deadline = time.monotonic() + settle
    while True:
        out = subprocess.run(["bpftool", "prog", "show", "--json"], capture_output=True, text=True)
        held = _prog_ids_held_by_processes() | _prog_ids_pinned_elsewhere()
        names = [
            f"{p.get('name')} (id {p.get('id')})"
            for p in json.loads(out.stdout or "[]")
            if p.get("name", "").startswith(("kfree_skb_", "dt_")) and p.get("id") not in held
        ]
        if len(names) <= at_most or time.monotonic() > deadline:
            return names
        time.sleep(0.1)


def _prog_ids_pinned_elsewhere() -> set[int]:
    """Programs of links pinned in bpffs outside this run's recorder directory."""
    mine = os.environ.get("DROPTRACE_PIN_DIR", "/sys/fs/bpf/droptrace") + "/"
    out = subprocess.run(
        ["bpftool", "--bpffs", "link", "show", "--json"], capture_output=True, text=True
    )
    return {
        int(link["prog_id"])
        for link in json.loads(out.stdout or "[]")
        if link.get("pinned") and not any(p.startswith(mine) for p in link["pinned"])
    }


def _prog_ids_held_by_processes() -> set[int]:
    """Program ids referenced by any process's program or link fds (their fdinfo)."""
    held: set[int] = set()
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        # Not Path.glob("[0-9]*/fdinfo/*"): it raises when a process ends between listing
        # /proc and reading its fdinfo directory.
        try:
            infos = list(Path(f"/proc/{pid}/fdinfo").iterdir())
        except OSError:
            continue  # the process went away meanwhile
        for info in infos:
            try:
                text = info.read_text()
            except OSError:
                continue  # the process or fd went away meanwhile
            for line in text.splitlines():
                if line.startswith("prog_id:"):
                    held.add(int(line.split()[1]))
    return held


def link(a: str, b: str, a_if: str, b_if: str, a_addr: str, b_addr: str) -> None:
    """A veth pair between namespaces a and b with an address (CIDR) on each end."""
    sh("ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b)
    for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
        sh("ip", "addr", "add", addr, "dev", ifname, ns=ns)
        sh("ip", "link", "set", ifname, "up", ns=ns)


def router_pair(netns: MakeNetns) -> tuple[str, str]:
    """client 192.0.2.2 --- 192.0.2.1 router (forwarding on), the client routing through it."""
    client, router = netns("cli"), netns("rtr")
    link(client, router, "eth0", "r-cli", "192.0.2.2/24", "192.0.2.1/24")
    sh("ip", "route", "add", "default", "via", "192.0.2.1", ns=client)
    sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=router)
    return client, router


def routed_udp_topology(netns: MakeNetns) -> tuple[str, str, str]:
    """client --- router --- server (198.51.100.2), the server routing back via the router."""
    client, router = router_pair(netns)
    server = netns("srv")
    link(router, server, "r-srv", "eth0", "198.51.100.1/24", "198.51.100.2/24")
    sh("ip", "route", "add", "default", "via", "198.51.100.1", ns=server)
    return client, router, server


def spoofing_pair(netns: MakeNetns) -> tuple[str, str]:
    """client --- router, where the router reaches 198.51.100.0/24 through another link
    (r-oth) and the client can send from 198.51.100.77 on its link to the router: a source
    that fails the strict rp_filter check on r-cli and passes the loose one."""
    client, router = router_pair(netns)
    link(router, netns("oth"), "r-oth", "eth0", "198.51.100.1/24", "198.51.100.2/24")
    sh("ip", "addr", "add", "198.51.100.77/32", "dev", "eth0", ns=client)
    # A static neighbour: the router's strict check would ignore ARP from that source too.
    mac = sh("cat", "/sys/class/net/r-cli/address", ns=router).stdout.strip()
    sh("ip", "neigh", "replace", "192.0.2.1", "lladdr", mac, "dev", "eth0", ns=client)
    return client, router
