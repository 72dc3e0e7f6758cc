"""Interface names per network namespace (ifindex numbers repeat across namespaces)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from tracer.errors import UnknownInterface
from tracer.system import netns
from tracer.system.netlink import IPRoute

MAX_NAMESPACES = 1024  # namespaces whose names are kept: pods come and go


def _links(path: Path) -> dict[int, str]:
    def read() -> dict[int, str]:
        with IPRoute() as ipr:
            return {
                int(link["index"]): str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()
            }

    return netns.run_in(path, read)


def index_of(name: str, ns: netns.NetnsRef) -> int:
    """The ifindex of interface `name` in namespace `ns`."""
    for idx, ifname in _links(ns.path).items():
        if ifname == name:
            return idx
    raise UnknownInterface(f"no interface {name!r} in network namespace {ns.name}")


class IfaceNames:
    """(netns inode, ifindex) -> interface name, refreshed at most once a second per namespace."""

    def __init__(self, names: netns.NetnsNames) -> None:
        self._netns = names
        self._cache: dict[int, dict[int, str]] = {}
        self._loaded: dict[int, float] = {}

    def name(self, inode: int, ifindex: int) -> str | None:
        if not ifindex:
            return None
        links = self._cache.get(inode, {})
        if ifindex not in links and time.monotonic() - self._loaded.get(inode, 0.0) > 1.0:
            if inode not in self._loaded and len(self._loaded) >= MAX_NAMESPACES:
                self._cache.clear()  # namespaces come and go: let the gone ones go
                self._loaded.clear()
            self._loaded[inode] = time.monotonic()
            ref = self._netns.lookup(inode)
            if ref is not None:
                with contextlib.suppress(OSError):
                    links = self._cache[inode] = _links(ref.path)
        return links.get(ifindex)
