"""The kernel's own drop counters next to the traced drops, on real sockets and devices in
namespaces each test makes: a server that never accepts, a receiver that never reads, a veth
whose peer is down, and a real Prometheus scraping `serve`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Droptrace, LabUp, MakeNetns, k8s_ns, link, run_cli, sh
from tests.test_serve import _free_port, _query, prometheus  # noqa: F401 - the fixture

pytestmark = pytest.mark.root

ADDR = "198.51.100.10"


def kernel_counter(ns: str, group: str, name: str) -> int:
    """One /proc/net/snmp or netstat value, read as the kernel keeps it in that namespace."""
    for f in ("snmp", "netstat"):
        lines = sh("cat", f"/proc/net/{f}", ns=ns).stdout.splitlines()
        for head, values in zip(lines[::2], lines[1::2], strict=False):
            if head.startswith(group + ":"):
                row = dict(zip(head.split()[1:], values.split()[1:], strict=False))
                if name in row:
                    return int(row[name])
    raise AssertionError(f"no {group} {name} in {ns}")


@contextmanager
def process(ns: str, code: str) -> Iterator[subprocess.Popen[str]]:
    """A Python process in namespace ns, killed afterwards; ready once it printed a line."""
    p = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        yield p
    finally:
        p.kill()
        p.wait()


def never_accepts(port: int) -> str:
    return (
        "import socket,time\ns=socket.socket()\n"
        f"s.bind(({ADDR!r},{port})); s.listen(1); print('ready', flush=True); time.sleep(60)\n"
    )


def never_reads(port: int) -> str:
    return (
        "import socket,time\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)\n"
        f"s.bind(({ADDR!r},{port})); print('ready', flush=True); time.sleep(60)\n"
    )


def connect_many(ns: str, port: int, n: int = 30) -> None:
    """n clients at once, each giving up after 2 s: bounded, whatever the server does."""
    code = (
        "import socket,threading\ndef one():\n"
        f"    try: socket.create_connection(({ADDR!r},{port}),timeout=2).close()\n"
        "    except OSError: pass\n"
        f"ts=[threading.Thread(target=one) for _ in range({n})]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
    )
    sh(sys.executable, "-c", code, ns=ns)


def send_burst(ns: str, port: int, n: int, dst: str = ADDR) -> None:
    code = (
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"[s.sendto(b'x'*200, ({dst!r},{port})) for _ in range({n})]\n"
    )
    sh(sys.executable, "-c", code, ns=ns)


def lab_ns(netns: MakeNetns, tag: str) -> str:
    ns = netns(tag)
    sh("ip", "addr", "add", f"{ADDR}/32", "dev", "lo", ns=ns)
    return ns


def test_a_server_that_never_accepts_is_named_with_its_port_process_and_backlog(
    netns: MakeNetns, tmp_path: Path
) -> None:
    ns = lab_ns(netns, "listen")
    summary = tmp_path / "summary.json"
    before = kernel_counter(ns, "TcpExt", "ListenOverflows")
    with process(ns, never_accepts(7000)) as server:
        args = ("--json", "--netns", ns, "--duration", "7", "--summary-json", str(summary))
        with Droptrace(*args) as dt:
            connect_many(ns, 7000)
            res = dt.wait()
        after = kernel_counter(ns, "TcpExt", "ListenOverflows")
    assert res.rc == 0, res.stderr
    assert after > before, "the kernel counted no listen overflow"
    # --json: a counter line naming the listener while the session runs.
    lines = [e for e in res.events if e.get("type") == "counter"]
    listen = [e for e in lines if e["counter"] == "TcpExtListenOverflows"]
    assert listen, res.stdout
    last = listen[-1]
    assert 0 < last["delta"] <= after - before
    assert last["untraced"] > 0 and last["category"] == "listen_queue"
    [sock] = last["evidence"]["listeners"]
    assert (sock["local"], sock["backlog"], sock["pid"]) == (f"{ADDR}:7000", 1, server.pid)
    assert sock["command"] == Path(sys.executable).name[:15]
    assert last["fix"] and "raise its listen() backlog (now 1" in last["fix"]
    # The summary: the counter's delta over the session and the listener, in words and JSON.
    doc = json.loads(summary.read_text())
    [counted] = [c for c in doc["kernel_counters"] if c["counter"] == "TcpExtListenOverflows"]
    assert counted["delta"] == after - before
    assert counted["traced"] == doc["totals"].get("TCP_LISTEN_OVERFLOW", 0)
    [told] = [e for e in doc["not_traced"] if e["counter"] == "TcpExtListenOverflows"]
    assert told["evidence"]["listeners"][0]["pid"] == server.pid
    assert f"TcpExtListenOverflows +{after - before}" in res.stderr
    assert f"listening socket {ADDR}:7000 (pid {server.pid} (" in res.stderr
    assert "accept queue" in res.stderr and "of backlog 1" in res.stderr


def test_a_receiver_that_never_reads_counts_exactly_its_traced_buffer_drops(
    netns: MakeNetns, tmp_path: Path
) -> None:
    ns = lab_ns(netns, "rcvbuf")
    summary = tmp_path / "summary.json"
    before = kernel_counter(ns, "Udp", "RcvbufErrors")
    with process(ns, never_reads(5353)) as receiver:
        args = ("--json", "--netns", ns, "--duration", "4", "--summary-json", str(summary))
        with Droptrace(*args) as dt:
            send_burst(ns, 5353, 300)
            res = dt.wait()
        after = kernel_counter(ns, "Udp", "RcvbufErrors")
    assert res.rc == 0, res.stderr
    doc = json.loads(summary.read_text())
    [counted] = [c for c in doc["kernel_counters"] if c["counter"] == "UdpRcvbufErrors"]
    assert counted["delta"] == after - before > 0
    assert counted["traced"] == doc["totals"]["SOCKET_RCVBUFF"] == counted["delta"]
    assert counted["untraced"] == 0 and doc["not_traced"] == []
    n = counted["delta"]
    assert f"UdpRcvbufErrors +{n} \u2194 {n} traced SOCKET_RCVBUFF" in res.stderr
    assert not [e for e in res.events if e.get("type") == "counter"]  # nothing untraced
    drops = [e for e in res.events if e["reason"] == "SOCKET_RCVBUFF"]
    assert drops and all(e["category"] == "socket_buffer" for e in drops)
    sock = drops[0]["evidence"]["socket"]
    assert (sock["local"], sock["pid"]) == (f"{ADDR}:5353", receiver.pid)
    assert sock["rcvbuf"] == 8192  # SO_RCVBUF 4096, doubled by the kernel
    assert drops[0]["evidence"]["rmem"]["net.core.rmem_max"] > 0
    assert f"pid {receiver.pid} (" in drops[0]["explanation"]
    assert "reads too slowly" in drops[0]["fix"]


def test_a_pods_receiver_that_never_reads_is_named_with_its_pod(lab_up: LabUp) -> None:
    from tracer.lab import labpods

    prefix = lab_up("no-route")
    ns, pod_ip = prefix + "pod-a", "198.18.1.2"
    marker = next(
        (d / labpods.MARKER).read_text()
        for d in labpods.pod_dirs(prefix)
        if f"netns={ns}\n" in (d / labpods.MARKER).read_text()
    )
    cgroup = Path(dict(x.split("=", 1) for x in marker.splitlines())["cgroup"])
    receiver = never_reads(5353).replace(repr(ADDR), repr(pod_ip))
    with process(ns, receiver) as app:
        (cgroup / "cgroup.procs").write_text(
            str(app.pid)
        )  # a process of the pod, as kubelet runs it
        with Droptrace("--json", "--netns", ns, "--duration", "4") as dt:
            send_burst(ns, 5353, 100, dst=pod_ip)
            res = dt.wait()
    assert res.rc == 0, res.stderr
    drops = [e for e in res.events if e.get("reason") == "SOCKET_RCVBUFF"]
    assert drops, res.stdout
    sock = drops[0]["evidence"]["socket"]
    assert (sock["pid"], sock["pod"]) == (app.pid, f"{k8s_ns(prefix)}/pod-a")
    assert f"pod {k8s_ns(prefix)}/pod-a" in drops[0]["explanation"]


def test_a_veth_whose_peer_is_down_names_the_device_and_its_drops(
    netns: MakeNetns, tmp_path: Path
) -> None:
    a, b = netns("deva"), netns("devb")
    link(a, b, "dt-va", "dt-vb", "198.51.100.1/24", "198.51.100.2/24")
    sh("ip", "link", "set", "dt-vb", "down", ns=b)
    frames = (
        "import socket; s=socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('dt-va',0))\n"
        "f=b'\\xff'*6+b'\\x02\\x00\\x00\\x00\\x00\\x01'+b'\\x88\\xb6'+b'droptrace'*6\n"
        "for _ in range(25):\n"
        "    try: s.send(f)\n"
        "    except OSError: pass  # ENOBUFS: dropped on the way out, which is the point\n"
    )
    summary = tmp_path / "summary.json"
    args = ("--json", "--netns", a, "--duration", "3", "--summary-json", str(summary))
    with Droptrace(*args) as dt:
        sh(sys.executable, "-c", frames, ns=a)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    doc = json.loads(summary.read_text())
    [dev] = [c for c in doc["kernel_counters"] if c["counter"] == "tx_dropped"]
    assert dev["iface"] == "dt-va" and dev["netns"] == a
    assert dev["delta"] >= 25 and dev["traced"] == dev["delta"], dev
    assert f"dt-va tx_dropped +{dev['delta']} \u2194 {dev['delta']} traced" in res.stderr


def test_a_qdisc_with_no_room_is_named_with_its_device(netns: MakeNetns, tmp_path: Path) -> None:
    a, b = netns("tbfa"), netns("tbfb")
    link(a, b, "dt-qa", "dt-qb", "198.51.100.1/24", "198.51.100.2/24")
    sh("tc", "qdisc", "add", "dev", "dt-qa", "root", "tbf", "rate", "1mbit", "burst", "2k",
       "limit", "3000", ns=a)  # fmt: skip
    flood = (
        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "for _ in range(300):\n"
        "    try: s.sendto(b'x'*1000, ('198.51.100.2', 9))\n"
        "    except OSError: pass  # ENOBUFS: the qdisc dropped it\n"
    )
    summary = tmp_path / "summary.json"
    args = ("--json", "--netns", a, "--duration", "3", "--summary-json", str(summary))
    with Droptrace(*args) as dt:
        sh(sys.executable, "-c", flood, ns=a)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    shown = sh("tc", "-s", "qdisc", "show", "dev", "dt-qa", ns=a).stdout
    doc = json.loads(summary.read_text())
    [qdisc] = [c for c in doc["kernel_counters"] if c["counter"] == "qdisc_drops"]
    assert qdisc["iface"] == "dt-qa" and f"dropped {qdisc['delta']}," in shown, shown
    assert qdisc["traced"] == qdisc["delta"] == doc["totals"]["QDISC_DROP"] > 0


def test_a_device_counter_is_explained_with_the_device_its_driver_and_qdisc(
    netns: MakeNetns,
) -> None:
    from tracer.counters import explain
    from tracer.counters.catalog import BY_NAME
    from tracer.model.counters import CounterMove, DeviceInfo
    from tracer.system import netns as system_netns

    a, b = netns("infa"), netns("infb")
    link(a, b, "dt-ia", "dt-ib", "198.51.100.1/24", "198.51.100.2/24")
    ref = system_netns.resolve(a)
    ifindex = int(sh("cat", "/sys/class/net/dt-ia/ifindex", ns=a).stdout)
    spec = BY_NAME["rx_dropped"]
    move = CounterMove("rx_dropped", a, ref.inode, "dt-ia", 9, 0, spec.reasons, spec.what,
                       ifindex=ifindex)  # fmt: skip
    [info] = explain.gather(move, ref, "noqueue", lambda _: None)
    assert isinstance(info, DeviceInfo)
    assert (info.name, info.driver, info.qdisc, info.rx_ring) == ("dt-ia", "veth", "noqueue", None)
    assert info.rx_queues and info.tx_queues
    e = explain.event(move, 9, (info,))
    assert "on dt-ia (veth)" in e.explanation
    assert e.fix is not None and "its peer" in e.fix


def test_doctor_names_the_receiver_that_dropped_and_its_process(netns: MakeNetns) -> None:
    ns = lab_ns(netns, "docsock")
    with process(ns, never_reads(5353)) as receiver:
        send_burst(ns, 5353, 100)
        res = run_cli("doctor", "--netns", ns)
    assert res.rc == 1, res.stdout
    line = next(x for x in res.stdout.splitlines() if f"{ADDR}:5353" in x)
    assert line.startswith("warn") and f"pid {receiver.pid} (" in line
    assert "SO_RCVBUF" in res.stdout


@pytest.fixture
def recorder_stopped() -> Iterator[None]:
    yield
    run_cli("stop")


def test_dump_reconciles_the_counters_since_recording_started(
    netns: MakeNetns, recorder_stopped: None
) -> None:
    ns = lab_ns(netns, "dumpk")
    with process(ns, never_reads(5353)) as receiver, process(ns, never_accepts(7000)) as server:
        assert run_cli("record", "--netns", ns).rc == 0
        before = kernel_counter(ns, "Udp", "RcvbufErrors")
        send_burst(ns, 5353, 150)
        connect_many(ns, 7000, n=10)
        dropped = kernel_counter(ns, "Udp", "RcvbufErrors") - before
        res = run_cli("dump", "--json")
        assert res.rc == 0, res.stderr
        doc = json.loads(res.stdout)
        text = run_cli("dump").stdout
        redacted = run_cli("dump", "--redact").stdout
    counted = {c["counter"]: c for c in doc["kernel_counters"]}
    rcvbuf = counted["UdpRcvbufErrors"]
    assert rcvbuf["delta"] == dropped == doc["totals"]["per_reason"]["SOCKET_RCVBUFF"]
    assert rcvbuf["traced"] == dropped and rcvbuf["untraced"] == 0
    [told] = [e for e in doc["not_traced"] if e["counter"] == "TcpExtListenOverflows"]
    assert told["evidence"]["listeners"][0]["pid"] == server.pid
    drop = next(d for d in doc["drops"] if d["reason"] == "SOCKET_RCVBUFF")
    assert drop["evidence"]["socket"]["pid"] == receiver.pid
    assert "## Kernel drop counters since recording started" in text
    assert f"| UdpRcvbufErrors | {ns} | - | {dropped} | {dropped} | SOCKET_RCVBUFF | 0 |" in text
    assert "### Not seen by the tracepoint" in text and f"{ADDR}:7000" in text
    assert ADDR not in redacted


def _wait_for(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(1)
    return check()


def test_prometheus_sees_the_kernels_counter_beside_the_traced_drops(
    netns: MakeNetns,
    prometheus: Callable[[str], str],  # noqa: F811 - the fixture imported above
) -> None:
    ns = lab_ns(netns, "promk")
    port = _free_port()
    with (
        process(ns, never_reads(5353)),
        Droptrace("serve", "--listen", f"127.0.0.1:{port}", "--netns", ns, "--node", "n1") as dt,
    ):
        url = prometheus(f"127.0.0.1:{port}")
        before = kernel_counter(ns, "Udp", "RcvbufErrors")
        send_burst(ns, 5353, 200)
        dropped = kernel_counter(ns, "Udp", "RcvbufErrors") - before
        kernel_q = 'sum(droptrace_kernel_drops_total{counter="UdpRcvbufErrors",node="n1"})'
        traced_q = 'sum(droptrace_drops_total{reason="SOCKET_RCVBUFF",node="n1"})'

        def both() -> tuple[float, float] | None:
            k, t = _query(url, kernel_q), _query(url, traced_q)
            if not k or not t:
                return None
            got = (float(k[0]["value"][1]), float(t[0]["value"][1]))
            return got if got == (dropped, dropped) else None

        assert dropped > 0
        assert _wait_for(both) == (dropped, dropped)
        [series] = _query(url, 'droptrace_kernel_drops_total{counter="UdpRcvbufErrors"}')
        assert "pod" not in series["metric"]  # empty: no pod's namespace
        untraced = _query(url, 'droptrace_kernel_drops_untraced_total{counter="UdpRcvbufErrors"}')
        assert untraced and float(untraced[0]["value"][1]) == 0
        dt.proc.send_signal(signal.SIGTERM)
        res = dt.wait()
    assert res.rc == 0, res.stderr
