"""A packet this host sent, dropped before it had a device, still says where it was going:
`iface` is the device its route leaves by, never null where the kernel could route it."""

from __future__ import annotations

import sys

import pytest

from tests.helpers import Droptrace, MakeNetns, router_pair, sh

pytestmark = pytest.mark.root
_SEND = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(2):
    try:
        s.sendto(b"droptrace", ("198.51.100.2", 7777))
    except PermissionError:
        pass
"""


def test_a_locally_sent_packet_dropped_in_output_names_the_device_its_route_leaves_by(
    netns: MakeNetns,
) -> None:
    client, _ = router_pair(netns)
    sh("iptables", "-A", "OUTPUT", "-p", "udp", "--dport", "7777", "-j", "DROP", ns=client)
    with Droptrace("--json", "--netns", client, "--duration", "4") as dt:
        # sendto() fails with EPERM for each (OUTPUT dropped it): the sender carries on.
        sh(sys.executable, "-c", _SEND, ns=client)
        res = dt.wait()
    drops = [e for e in res.events if e["dport"] == 7777]
    assert drops, res.events
    ev = drops[0]
    assert (ev["category"], ev["iface"], ev["ifindex"]) == ("netfilter", "eth0", 0), ev
    assert ev["evidence"]["iface_from"] == "route"
    assert "on eth0 in netns" in ev["explanation"] and "?" not in ev["explanation"]
    assert ev["rule"]["chain"] == "OUTPUT"
