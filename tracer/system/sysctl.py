"""Sysctls of a network namespace (/proc/sys/net is per namespace, read from inside it)."""

from __future__ import annotations

from pathlib import Path

from tracer.system import netns

_ROOT = Path("/proc/sys")


def _read(key: str) -> int | None:
    try:
        # sysctl(8) notation: dots separate levels, '/' stands for a dot inside a name.
        path = _ROOT.joinpath(*(part.replace("/", ".") for part in key.split(".")))
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def read(ns_path: Path, keys: list[str]) -> dict[str, int | None]:
    """Values of dotted `keys` (net.ipv4.ip_forward) inside the namespace; None where absent."""
    return netns.run_in(ns_path, lambda: {k: _read(k) for k in keys})


def conf_key(iface: str, name: str) -> str:
    return "net.ipv4.conf." + iface.replace(".", "/") + "." + name
