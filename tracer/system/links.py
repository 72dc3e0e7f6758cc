"""Devices of a namespace as netlink describes them (pyroute2 RTM_GETLINK), and the other
end of a veth, which may be in another namespace."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tracer.model.devices import Link
from tracer.system import netns
from tracer.system.netlink import IPRoute

_IFF_UP = 0x1


def _lower(msg: Any, info: Any) -> int | None:
    """IFLA_LINK: a veth's peer, an ipip/gre tunnel's device; a vxlan names its own."""
    data = info.get_attr("IFLA_INFO_DATA") if info else None
    vxlan = (
        data.get_attr("IFLA_VXLAN_LINK") if data is not None and hasattr(data, "get_attr") else None
    )
    return msg.get_attr("IFLA_LINK") or vxlan or None


def _link(msg: Any) -> Link:
    info = msg.get_attr("IFLA_LINKINFO")
    carrier = msg.get_attr("IFLA_CARRIER")
    return Link(
        name=str(msg.get_attr("IFLA_IFNAME")),
        index=int(msg["index"]),
        kind=info.get_attr("IFLA_INFO_KIND") if info else None,
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        up=bool(msg["flags"] & _IFF_UP),
        carrier=None if carrier is None else bool(carrier),
        operstate=str(msg.get_attr("IFLA_OPERSTATE") or "UNKNOWN"),
        link_index=_lower(msg, info),
        link_netnsid=msg.get_attr("IFLA_LINK_NETNSID"),
    )


def all_links(ns_path: Path) -> list[Link]:
    def read() -> list[Link]:
        with IPRoute() as ipr:
            return [_link(m) for m in ipr.get_links()]

    return netns.run_in(ns_path, read)


def find(ns_path: Path, name: str | None = None, index: int | None = None) -> Link | None:
    """One device by name or index, or None."""
    return next(
        (
            link
            for link in all_links(ns_path)
            if (name is not None and link.name == name)
            or (index is not None and link.index == index)
        ),
        None,
    )


def peer(
    link: Link, here: netns.NetnsRef, names: netns.NetnsNames
) -> tuple[Link, netns.NetnsRef] | None:
    """The other end of a veth: the device whose IFLA_LINK points back at this one, in this
    namespace or in the one its link-netnsid names. Ifindexes repeat across namespaces
    (every pod's eth0 is 2), so the namespace is matched by its id as seen from here."""
    if link.kind != "veth" or link.link_index is None:
        return None
    if link.link_netnsid is None:
        where: netns.NetnsRef | None = here
    else:
        where = _by_nsid(here, names.all(), link.link_netnsid)
    if where is None:
        return None
    other = find(where.path, index=link.link_index)
    if other is None or other.kind != "veth" or other.link_index != link.index:
        return None
    return other, where


def _by_nsid(
    here: netns.NetnsRef, candidates: list[netns.NetnsRef], nsid: int
) -> netns.NetnsRef | None:
    """The namespace that `here` knows by `nsid` (RTM_GETNSID with each candidate's fd)."""

    def match() -> netns.NetnsRef | None:
        with IPRoute() as ipr:
            for ref in candidates:
                if ref.inode == here.inode:
                    continue
                try:
                    fd = os.open(ref.path, os.O_RDONLY)
                except OSError:
                    continue
                try:
                    answer = ipr.get_netnsid(fd=fd)
                finally:
                    os.close(fd)
                if answer is not None and answer.get("nsid") == nsid:
                    return ref
        return None

    return netns.run_in(here.path, match)
