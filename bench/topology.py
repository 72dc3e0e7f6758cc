"""The bench topology: sender -> router (nft DROP on forward, counted) -> receiver.

All addresses are in 198.19.248.0/22, a block of the benchmarking range 198.18.0.0/15 that
no test or lab scenario uses: a test filtering on its own addresses never sees the storm of
a bench running beside it. No namespace has a link to the host or a route out. Teardown
deletes the namespaces, which takes their links, routes and nft tables with them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

SENDER_ADDR = IPv4Address("198.19.248.1")
ROUTER_IN = IPv4Address("198.19.248.254")
ROUTER_OUT = IPv4Address("198.19.249.254")
RECEIVER_ADDR = IPv4Address("198.19.249.1")
STORM_NET = IPv4Network("198.19.249.0/25")  # destinations of the storm (behind the router)
STORM_PORT = 9
NFT_TABLE = "dtbench"


def sh(*args: str, ns: str | None = None, check: bool = True) -> str:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    return subprocess.run(cmd, check=check, capture_output=True, text=True).stdout


@dataclass(frozen=True, slots=True)
class Topology:
    sender: str
    router: str
    receiver: str
    bystander: str  # an idle namespace: the target of the filter that matches nothing

    @property
    def names(self) -> tuple[str, ...]:
        return (self.sender, self.router, self.receiver, self.bystander)

    def netns_inode(self, name: str) -> int:
        return os.stat(f"/run/netns/{name}").st_ino

    def dropped(self) -> int:
        """Packets the router's DROP rule counted (the kernel's own count of the storm)."""
        out = sh("nft", "-j", "list", "counter", "ip", NFT_TABLE, "storm", ns=self.router)
        for item in json.loads(out)["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise RuntimeError(f"no nft counter in {out!r}")


def _ns(name: str) -> None:
    sh("ip", "netns", "add", name)
    for key in ("all", "default"):  # IPv6 start-up noise stays out of the counts
        sh("sysctl", "-qw", f"net.ipv6.conf.{key}.disable_ipv6=1", ns=name)
    sh("ip", "link", "set", "lo", "up", ns=name)


def _veth(a: str, a_if: str, a_addr: str, b: str, b_if: str, b_addr: str) -> None:
    sh("ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b)
    for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
        sh("ip", "addr", "add", addr, "dev", ifname, ns=ns)
        sh("ip", "link", "set", ifname, "up", ns=ns)


_RULES = f"""
table ip {NFT_TABLE} {{
  counter storm {{ }}
  chain forward {{
    type filter hook forward priority 0; policy accept;
    ip daddr {STORM_NET} udp dport {STORM_PORT} counter name storm drop
  }}
}}
"""


def build(prefix: str) -> Topology:
    t = Topology(f"{prefix}snd", f"{prefix}rtr", f"{prefix}rcv", f"{prefix}idle")
    try:
        for name in t.names:
            _ns(name)
        _veth(t.sender, "eth0", f"{SENDER_ADDR}/24", t.router, "r-snd", f"{ROUTER_IN}/24")
        _veth(t.router, "r-rcv", f"{ROUTER_OUT}/24", t.receiver, "eth0", f"{RECEIVER_ADDR}/24")
        sh("ip", "route", "add", "default", "via", str(ROUTER_IN), ns=t.sender)
        sh("ip", "route", "add", "default", "via", str(ROUTER_OUT), ns=t.receiver)
        sh("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=t.router)
        # A static neighbour: no ARP exchange in the measured window.
        mac = sh("cat", "/sys/class/net/r-snd/address", ns=t.router).strip()
        sh("ip", "neigh", "replace", str(ROUTER_IN), "lladdr", mac, "dev", "eth0", ns=t.sender)
        subprocess.run(
            ["ip", "netns", "exec", t.router, "nft", "-f", "-"],
            input=_RULES,
            check=True,
            capture_output=True,
            text=True,
        )
    except BaseException:
        teardown(t)
        raise
    return t


def teardown(t: Topology) -> None:
    for name in t.names:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def storm(topo: Topology, shape: str, packets: int, seconds: float) -> float:
    """Runs one storm; returns packets per second as counted by the router's DROP rule."""
    before = topo.dropped()
    out = subprocess.run(
        ["ip", "netns", "exec", topo.sender, sys.executable, "-m", "bench.storm",
         "--shape", shape, "--src", str(SENDER_ADDR),
         "--dst-net", str(STORM_NET), "--dport", str(STORM_PORT),
         "--packets", str(packets), "--seconds", str(seconds)],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    took = float(json.loads(out.stdout)["seconds"])
    return (topo.dropped() - before) / took
