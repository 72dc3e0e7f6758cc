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


def read_text(ns_path: Path, keys: list[str]) -> dict[str, str | None]:
    """Whole values (`net.ipv4.udp_mem` is three numbers) inside the namespace, else the
    host's: a sysctl a namespace does not have (udp_mem) is the host's, for every one."""

    def get(key: str) -> str | None:
        path = _ROOT.joinpath(*(part.replace("/", ".") for part in key.split(".")))
        try:
            return " ".join(path.read_text().split())
        except OSError:
            return None

    values = netns.run_in(ns_path, lambda: {k: get(k) for k in keys})
    missing = [k for k, v in values.items() if v is None]
    if missing:
        values |= {k: get(k) for k in missing}
    return values


def conf_key(iface: str, name: str) -> str:
    return "net.ipv4.conf." + iface.replace(".", "/") + "." + name
