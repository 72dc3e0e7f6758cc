"""Drops at the device: a tc program that returns TC_ACT_SHOT, a queue with no room, a veth
whose peer is down. Each names what is attached or configured on the device, and whose."""

from __future__ import annotations

import ctypes
import os
import platform
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Droptrace, MakeNetns, routed_udp_topology, run_cli, send_udp, sh
from tracer import libbpf
from tracer.system import netns as system_netns
from tracer.system.ifaces import index_of

pytestmark = pytest.mark.root

_SHOT = """
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
__attribute__((section("tc"), used)) int dt_test_shot(struct __sk_buff *skb)
{
	return TC_ACT_SHOT;
}
char _license[] __attribute__((section("license"), used)) = "GPL";
"""


def shot_program(tmp_path: Path) -> Path:
    """A tc BPF program that drops every packet, built here with clang."""
    src, obj = tmp_path / "shot.bpf.c", tmp_path / "shot.bpf.o"
    src.write_text(_SHOT)
    arch_include = f"/usr/include/{platform.machine()}-linux-gnu"
    subprocess.run(
        [
            "clang",
            "-O2",
            "-g",
            "-target",
            "bpf",
            f"-I{arch_include}",
            "-c",
            str(src),
            "-o",
            str(obj),
        ],
        check=True,
        capture_output=True,
    )
    return obj


@contextmanager
def tcx_attached(obj: Path, ns: str, dev: str) -> Iterator[None]:
    """The program attached to dev's ingress with tcx (a BPF link, 6.6+), as Cilium does on
    current kernels; the link is this test's: closing it detaches the program."""
    lb = libbpf.lib()
    lb.bpf_program__fd.restype, lb.bpf_program__fd.argtypes = ctypes.c_int, [ctypes.c_void_p]
    lb.bpf_link_create.restype = ctypes.c_int
    lb.bpf_link_create.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p]
    handle = lb.bpf_object__open_file(str(obj).encode(), None)
    assert handle, "cannot open the BPF object"
    try:
        assert lb.bpf_object__load(handle) == 0
        prog_fd = lb.bpf_program__fd(lb.bpf_object__find_program_by_name(handle, b"dt_test_shot"))
        ref = system_netns.resolve(ns)
        index = index_of(dev, ref)
        link = system_netns.run_in(ref.path, lambda: lb.bpf_link_create(prog_fd, index, 46, None))
        assert link >= 0, "tcx attach refused"
        try:
            yield
        finally:
            os.close(link)
    finally:
        lb.bpf_object__close(handle)


def static_neighbour(ns: str, addr: str, dev: str, peer_ns: str, peer_dev: str) -> None:
    mac = sh("cat", f"/sys/class/net/{peer_dev}/address", ns=peer_ns).stdout.strip()
    sh("ip", "neigh", "replace", addr, "lladdr", mac, "dev", dev, ns=ns)


def drops_of(ns: str, send: Any, port: int, seconds: str = "4") -> list[dict[str, Any]]:
    with Droptrace("--json", "--netns", ns, "--duration", seconds) as dt:
        send()
        res = dt.wait()
    assert res.rc == 0, res.stderr
    return [e for e in res.events if e.get("dport") == port]  # counter lines are no drops


def test_a_tc_bpf_program_that_drops_is_named_with_its_id_tag_and_how_to_remove_it(
    netns: MakeNetns, tmp_path: Path
) -> None:
    client, router, _ = routed_udp_topology(netns)
    # The program drops ARP too: the client knows the router's MAC without asking.
    static_neighbour(client, "192.0.2.1", "eth0", router, "r-cli")
    sh("tc", "qdisc", "add", "dev", "r-cli", "clsact", ns=router)
    sh("tc", "filter", "add", "dev", "r-cli", "ingress", "pref", "7", "bpf", "da", "obj",
       str(shot_program(tmp_path)), "sec", "tc", ns=router)  # fmt: skip
    drops = drops_of(router, lambda: send_udp(client, "198.51.100.2", 7777, n=2), 7777)
    assert drops, "no tc drop"
    ev = drops[0]
    assert (ev["reason"], ev["category"], ev["iface"]) == ("TC_INGRESS", "tc", "r-cli")
    tc = ev["evidence"]["tc"]
    assert (tc["dev"], tc["direction"]) == ("r-cli", "ingress")
    (prog,) = tc["programs"]
    assert (prog["attach"], prog["kind"], prog["name"], prog["pref"]) == (
        "tc",
        "bpf",
        "dt_test_shot",
        7,
    )
    assert isinstance(prog["id"], int) and len(prog["tag"]) == 16
    assert prog["section"] == "shot.bpf.o:[tc]"
    assert f"BPF program dt_test_shot (id {prog['id']}, tag {prog['tag']}, tc" in ev["explanation"]
    assert f"bpftool prog show id {prog['id']}" in ev["fix"]
    assert "tc filter del dev r-cli ingress pref 7" in ev["fix"]


def test_a_tcx_program_that_drops_is_named_as_tcx(netns: MakeNetns, tmp_path: Path) -> None:
    client, router, _ = routed_udp_topology(netns)
    static_neighbour(client, "192.0.2.1", "eth0", router, "r-cli")
    with tcx_attached(shot_program(tmp_path), router, "r-cli"):
        drops = drops_of(router, lambda: send_udp(client, "198.51.100.2", 7777, n=2), 7777)
    assert drops, "no tc drop"
    ev = drops[0]
    assert (ev["reason"], ev["category"]) == ("TC_INGRESS", "tc")
    (prog,) = ev["evidence"]["tc"]["programs"]
    assert (prog["attach"], prog["name"], prog["pref"]) == ("tcx", "dt_test_shot", None)
    assert f"bpftool prog show id {prog['id']}" in ev["fix"]


def test_a_tbf_queue_with_no_room_is_qdisc_with_its_limit_backlog_and_drops(
    netns: MakeNetns,
) -> None:
    client, router, _ = routed_udp_topology(netns)
    sh("tc", "qdisc", "add", "dev", "r-srv", "root", "handle", "8001:", "tbf", "rate", "8kbit",
       "burst", "1600", "limit", "100", ns=router)  # fmt: skip

    drops = drops_of(router, lambda: send_udp(client, "198.51.100.2", 7777, n=6, size=1000), 7777)
    assert drops, "no qdisc drop"
    ev = drops[0]
    assert (ev["reason"], ev["category"], ev["iface"]) == ("QDISC_DROP", "qdisc", "r-srv")
    q = ev["evidence"]["qdisc"]["qdiscs"][0]
    assert (q["kind"], q["handle"], q["parent"], q["limit"], q["limit_unit"]) == (
        "tbf",
        "8001:",
        "root",
        100,
        "bytes",
    )
    assert q["drops"] >= 1
    assert (
        "tbf qdisc 8001: (root) on r-srv" in ev["explanation"]
        and "limit 100 bytes" in (ev["explanation"])
    )
    assert "tc qdisc change dev r-srv root handle 8001: tbf" in ev["fix"]


def test_a_veth_whose_peer_is_down_is_link_down_with_the_peer_and_its_namespace(
    netns: MakeNetns,
) -> None:
    routed_udp_topology(netns)  # a decoy: the same ifindexes, its server's eth0 up
    client, router, server = routed_udp_topology(netns)
    static_neighbour(router, "198.51.100.2", "r-srv", server, "eth0")
    sh("ip", "link", "set", "eth0", "down", ns=server)
    drops = drops_of(router, lambda: send_udp(client, "198.51.100.2", 7777, n=2), 7777)
    assert drops, "no drop"
    ev = drops[0]
    assert (ev["category"], ev["iface"]) == ("link_down", "r-srv"), ev
    link = ev["evidence"]["link"]
    assert (link["dev"], link["kind"], link["up"], link["carrier"]) == (
        "r-srv",
        "veth",
        True,
        False,
    )
    assert link["peer"] == {
        "dev": "eth0",
        "netns": server,
        "up": False,
        "carrier": False,
        "operstate": "DOWN",
    }
    assert f"its veth peer eth0 in netns {server} is down" in ev["explanation"]
    assert ev["fix"].startswith(f"ip link set eth0 up in netns {server}")
    assert "qdisc" not in ev["evidence"]
    doctor = run_cli("doctor", "--netns", router)
    assert doctor.rc == 1 and "r-srv in netns" in doctor.stdout and "no carrier" in doctor.stdout
