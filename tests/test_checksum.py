"""Bad checksums: where they arrived, who handed them over, InCsumErrors, and for a VXLAN
device the known offload bug."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from tests.helpers import Droptrace, MakeNetns, routed_udp_topology, sh

pytestmark = pytest.mark.root

_CSUM = """
import socket, struct
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b + b"\\0" * (len(b) % 2)))
    s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
"""
# A raw socket writes the UDP header itself, with a checksum that is wrong on purpose.
_BAD_UDP = (
    _CSUM
    + """
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
p = b"droptrace"
for _ in range(2):
    s.sendto(struct.pack("!HHHH", 40000, 7777, 8 + len(p), 0xdead) + p, ("198.51.100.2", 0))
"""
)
# A VXLAN packet (VNI 42) whose inner UDP checksum is wrong, as a broken tx offload sends it.
_BAD_VXLAN = (
    _CSUM
    + """
inner_mac = bytes.fromhex("{mac}")
payload = struct.pack("!HHHH", 40000, 7777, 17, 0xdead) + b"droptrace"
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, 17, 0,
                 socket.inet_aton("198.18.9.1"), socket.inet_aton("198.18.9.2"))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
frame = inner_mac + bytes.fromhex("020000000001") + b"\\x08\\x00" + ip + payload
vxlan = struct.pack("!II", 0x08000000, 42 << 8)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(2):
    s.sendto(vxlan + frame, ("198.51.100.2", 4789))
"""
)


def drops_of(ns: str, sender: str, code: str) -> list[dict[str, Any]]:
    with Droptrace("--json", "--netns", ns, "--duration", "4") as dt:
        sh(sys.executable, "-c", code, ns=sender)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    return [e for e in res.events if e["dport"] == 7777]


def test_a_bad_udp_checksum_names_the_device_the_sender_side_and_in_csum_errors(
    netns: MakeNetns,
) -> None:
    routed_udp_topology(netns)  # a decoy with the same ifindexes: the sender is not there
    _, router, server = routed_udp_topology(netns)
    drops = drops_of(server, router, _BAD_UDP)
    assert drops, "no checksum drop"
    ev = drops[-1]
    assert (ev["reason"], ev["category"], ev["iface"]) == ("UDP_CSUM", "checksum", "eth0"), ev
    c = ev["evidence"]["checksum"]
    assert (c["dev"], c["kind"]) == ("eth0", "veth")
    assert c["features"]["rx-checksum"] is True
    assert (c["sender"]["dev"], c["sender"]["netns"]) == ("r-srv", router)
    assert "tx-checksum-ip-generic" in c["sender"]["features"]
    assert c["in_csum_errors"]["udp"] == 2
    assert f"it was sent on r-srv in netns {router}" in ev["explanation"]
    assert "InCsumErrors (udp) is 2" in ev["explanation"]
    assert "from 198.51.100.1 with a wrong checksum" in ev["fix"]


def test_a_bad_inner_checksum_on_a_vxlan_device_names_the_offload_bug_and_its_fix(
    netns: MakeNetns,
) -> None:
    _, router, server = routed_udp_topology(netns)
    sh("ip", "link", "add", "vxlan0", "type", "vxlan", "id", "42", "local", "198.51.100.2",
       "dstport", "4789", "dev", "eth0", ns=server)  # fmt: skip
    sh("ip", "addr", "add", "198.18.9.2/24", "dev", "vxlan0", ns=server)
    sh("ip", "link", "set", "vxlan0", "up", ns=server)
    mac = sh("cat", "/sys/class/net/vxlan0/address", ns=server).stdout.strip().replace(":", "")
    drops = drops_of(server, router, _BAD_VXLAN.format(mac=mac))
    assert drops, "no checksum drop"
    ev = drops[-1]
    assert (ev["reason"], ev["category"], ev["iface"]) == ("UDP_CSUM", "checksum", "vxlan0"), ev
    assert ev["evidence"]["checksum"]["kind"] == "vxlan"
    assert "flannel#1279" in ev["explanation"]
    assert ev["fix"].startswith(
        "on the nodes that send over this overlay: ethtool -K vxlan0 tx-checksum-ip-generic off"
    )
