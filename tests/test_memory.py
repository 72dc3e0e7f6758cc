"""What droptrace keeps in memory (issue 21): the kernel's symbols as a compact table read a
chunk at a time, and caches that stay under their bounds however many flows a session sees."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from ipaddress import ip_address
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import SLOW, MakeNetns, sh
from tracer import enrich, session, startup
from tracer.enrich import Enricher, evidence, pods_api
from tracer.enrich import rules as rule_finder
from tracer.enrich.podtypes import Pod
from tracer.model import AttributedDrop
from tracer.model.counters import CounterEvent
from tracer.model.tracing import HookReport, Summary
from tracer.nftrace import rules as rule_texts
from tracer.nftrace import tables
from tracer.pipeline import Pipeline
from tracer.system import conntrack, counters, ifaces, kernel


def _kallsyms(tmp_path: Path, lines: list[tuple[int, str, str]], tail: str = "\n") -> Path:
    path = tmp_path / "kallsyms"
    path.write_text("\n".join(f"{a:016x} {kind} {name}" for a, kind, name in lines) + tail)
    return path


def test_kernel_symbols_name_addresses_of_the_kernel_and_of_modules_placed_after(
    tmp_path: Path,
) -> None:
    base = 0xFFFFFFFF81000000
    own = [(base + 0x10 * i, "T" if i % 3 else "t", f"func_{i}") for i in range(20000)]
    data = [(base + 0x10 * i + 8, "D", f"data_{i}") for i in range(0, 20000, 7)]
    # Modules follow the kernel's own symbols in the file, at lower and higher addresses.
    modules = [(0xFFFFFFFFC0000000 + 0x10 * i, "t", f"mod_{i}\t[m]") for i in range(50)]
    progs = [(0xFFFFFFFF80000000 + 0x10 * i, "t", f"bpf_prog_{i}\t[bpf]") for i in range(30)]
    path = _kallsyms(tmp_path, sorted(own + data) + modules + progs, tail="")  # no last \n

    symbols = kernel.KernelSymbols(path)
    assert symbols.name(base) == "func_0"
    assert symbols.name(base + 0x10 * 12345 + 9) == "func_12345"  # data symbols are skipped
    assert symbols.name(base + 0x10 * 19999) == "func_19999"
    assert symbols.name(0xFFFFFFFFC0000000 + 0x10 * 49 + 2) == "mod_49"  # the last line
    assert symbols.name(0xFFFFFFFF80000000 + 0x10 * 29) == "bpf_prog_29"
    assert symbols.name(0x1000) == "0x1000"  # below every symbol


def test_kernel_symbols_without_addresses_name_nothing(tmp_path: Path) -> None:
    """kptr_restrict shows every address as zero to a reader without CAP_SYSLOG."""
    path = _kallsyms(tmp_path, [(0, "T", "a"), (0, "t", "b")])
    assert kernel.KernelSymbols(path).name(0xFFFFFFFF81000000) == "0xffffffff81000000"


def test_addresses_pods_gave_up_are_forgotten_once_their_names_expired(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API's pods come and go all over a cluster: the addresses they gave up (kept a
    minute, to name drops explained late) must not pile up over a long session."""
    monkeypatch.setattr(pods_api, "MAX_PAST", 4)
    api = pods_api.ApiPods.__new__(pods_api.ApiPods)  # its caches without a server
    api._past = {}
    pod = Pod("default", "web", "uid-1", ())
    second = 10**9
    for i in range(50):
        api._gave_up(ip_address(f"198.18.0.{i}"), pod, now=i * 10 * second)
    # A minute's worth is kept (six, ten seconds apart), the rest forgotten.
    assert set(api._past) == {ip_address(f"198.18.0.{i}") for i in range(44, 50)}


def _verdicts(e: Enricher) -> int:
    spaces = e._rules._trace._spaces.values()
    return max((len(s.known) for s in spaces if s is not None), default=0)


# What a session keeps per flow, per namespace or per key: how to measure it, the bound
# that holds it (module, name) and, in the test below, a small value for that bound.
_CACHES: dict[str, tuple[Callable[[Enricher], int], ModuleType, str, int]] = {
    "evidence": (lambda e: len(e._evidence._cache), evidence, "MAX_ENTRIES", 6),
    "dnat origins": (lambda e: len(e._dnat_seen), enrich, "MAX_DNAT_SEEN", 5),
    "conntrack sockets": (lambda e: len(e._conntrack), conntrack, "MAX_SOCKETS", 2),
    "nftrace namespaces": (lambda e: len(e._rules._trace), tables, "MAX_NAMESPACES", 2),
    "nftrace verdicts": (_verdicts, tables, "MAX_KNOWN", 3),
    "rule texts": (lambda e: len(e._rules._texts._cache), rule_texts, "MAX_ENTRIES", 2),
    "rule counters": (lambda e: len(e._rules._counters._last), rule_finder, "MAX_NAMESPACES", 2),
    "counter deltas": (lambda e: len(e._deltas._last), counters, "MAX_KEYS", 2),
    "interfaces": (lambda e: len(e.ifaces._cache), ifaces, "MAX_NAMESPACES", 2),
    "symbols": (lambda e: len(e.symbols._cache), kernel, "_MAX_CACHED", 1),
}


class _Sizes:
    """A sink that notes the largest size of each cache, measured after every drop on the
    explainer's thread (the one that fills them)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline
        self.most = dict.fromkeys(_CACHES, 0)
        self.netns: set[str] = set()

    def start(self, hooks: HookReport) -> None:
        pass

    def drop(self, item: AttributedDrop) -> None:
        self.netns.add(item.facts.netns)
        for name, (size, *_) in _CACHES.items():
            self.most[name] = max(self.most[name], size(self._pipeline.enricher))

    def flush(self) -> None:
        pass

    def counter(self, event: CounterEvent) -> None:
        pass

    def finish(self, summary: Summary) -> None:
        pass


# A datagram to each of 12 ports, a flow each; the OUTPUT rule's DROP fails every sendto.
_FLOWS = """
import contextlib, socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("203.0.113.1", 0))
for port in range(7000, 7012):
    with contextlib.suppress(PermissionError):
        s.sendto(b"droptrace", ("203.0.113.2", port))
"""


@pytest.mark.root
def test_a_long_session_of_many_flows_in_many_namespaces_keeps_its_caches_bounded(
    netns: MakeNetns, monkeypatch: pytest.MonkeyPatch
) -> None:
    for _, module, name, bound in _CACHES.values():
        monkeypatch.setattr(module, name, bound)
    names = [netns(f"many{i}") for i in range(5)]
    for ns in names:  # each a pair of addresses of its own, and a rule that drops what it sends
        sh("ip", "link", "add", "st0", "type", "veth", "peer", "name", "st1", ns=ns)
        sh("ip", "addr", "add", "203.0.113.1/24", "dev", "st0", ns=ns)
        sh("ip", "addr", "add", "203.0.113.2/24", "dev", "st1", ns=ns)
        sh("ip", "link", "set", "st0", "up", ns=ns)
        sh("ip", "link", "set", "st1", "up", ns=ns)
        sh("iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "7000:7999", "-j", "DROP", ns=ns)
    # A service kube-proxy would have named: else no drop asks conntrack where it was sent.
    svc = ("-d", "198.18.77.10/32", "-p", "udp", "-m", "comment", "--comment")
    sh("iptables", "-t", "nat", "-A", "OUTPUT", *svc, "default/web:http cluster IP", ns=names[0])

    def traffic() -> None:
        for _ in range(2):  # every namespace twice: what was let go is taken up again
            for ns in names:
                sh(sys.executable, "-c", _FLOWS, ns=ns)
                time.sleep(0.3)

    ready = startup.start(startup.Scope(netns=tuple(names)), signals=False)
    pipeline = ready.pipeline()
    sink = _Sizes(pipeline)
    sender = threading.Thread(target=traffic)
    summary = session.run(
        ready.filters, pipeline, sink, session.Limits(duration=12 * SLOW), on_ready=sender.start
    )
    sender.join()
    assert summary.totals["NETFILTER_DROP"] == 2 * 5 * 12, summary
    assert summary.unexplained == 0 and summary.lost == 0, summary
    assert sink.netns == set(names), sink.netns  # each namespace's drops were explained
    over = {k: (n, _CACHES[k][3]) for k, n in sink.most.items() if n > _CACHES[k][3]}
    assert not over, over
    # More flows and namespaces came than the bounds hold: the bounds were reached, and held.
    for full in ("dnat origins", "conntrack sockets", "nftrace namespaces", "rule counters"):
        assert sink.most[full] == _CACHES[full][3], sink.most
