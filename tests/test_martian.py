"""Martians (6.13+ names them): the address the kernel refused, what kind it is, how the
namespace routes it, and the sysctl that would let it through where one does."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from tests.helpers import Droptrace, MakeNetns, routed_udp_topology, sh

pytestmark = pytest.mark.root

# Frames written whole on the client's eth0 (AF_PACKET): the kernel's own stack would never
# send these addresses.
_FRAMES = """
import socket, struct
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
dst_mac = bytes.fromhex("{mac}")
src_mac = bytes.fromhex(open("/sys/class/net/eth0/address").read().strip().replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0))
for port, src, dst in {cases}:
    udp = struct.pack("!HHHH", 40000, port, 17, 0) + b"droptrace"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    s.send(dst_mac + src_mac + b"\\x08\\x00" + ip + udp)
"""
CASES = [
    (7001, "192.0.2.1", "198.51.100.2"),  # the router's own address as source
    (7002, "0.0.0.0", "198.51.100.2"),
    (7003, "224.0.0.5", "198.51.100.2"),
    (7004, "192.0.2.2", "127.0.0.1"),
    (7005, "192.0.2.2", "0.0.0.0"),
]


def test_martian_sources_and_destinations_are_named_with_the_address_and_the_setting(
    netns: MakeNetns,
) -> None:
    client, router, _ = routed_udp_topology(netns)
    mac = sh("cat", "/sys/class/net/r-cli/address", ns=router).stdout.strip().replace(":", "")
    with Droptrace("--json", "--netns", router, "--duration", "4") as dt:
        sh(sys.executable, "-c", _FRAMES.format(mac=mac, cases=CASES), ns=client)
        res = dt.wait()
    by_port: dict[int, dict[str, Any]] = {e["dport"]: e for e in res.events if e["dport"]}
    assert set(by_port) >= {7001, 7002, 7003, 7004, 7005}, res.events
    assert all(by_port[p]["category"] == "martian" for p in range(7001, 7006)), by_port

    local = by_port[7001]
    assert local["reason"] == "IP_LOCAL_SOURCE"
    m = local["evidence"]["martian"]
    assert (m["end"], m["addr"], m["kind"], m["accept_local"]) == (
        "source",
        "192.0.2.1",
        "local",
        0,
    )
    assert m["route"]["type"] == "local"
    assert "is this namespace's own address" in local["explanation"]
    assert "net.ipv4.conf.r-cli.accept_local=1" in local["fix"]

    zero, mcast = by_port[7002]["evidence"]["martian"], by_port[7003]["evidence"]["martian"]
    assert (zero["kind"], mcast["kind"]) == ("zero", "multicast")
    assert by_port[7002]["reason"] == "IP_INVALID_SOURCE"
    assert "no setting makes it valid" in by_port[7003]["fix"]

    loop = by_port[7004]
    assert loop["reason"] == "IP_LOCALNET"
    assert loop["evidence"]["martian"]["end"] == "destination"
    assert "net.ipv4.conf.r-cli.route_localnet=1" in loop["fix"]

    assert by_port[7005]["reason"] == "IP_INVALID_DEST"
    assert by_port[7005]["evidence"]["martian"]["kind"] == "zero"
