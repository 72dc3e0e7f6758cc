"""Offload features of a device, as `ethtool -k` shows them (pyroute2's ethtool, inside the
device's namespace)."""

from __future__ import annotations

from pathlib import Path

from tracer.system import netlink, netns

CHECKSUM_FEATURES = (
    "rx-checksum",
    "tx-checksum-ip-generic",
    "tx-checksum-ipv4",
    "tx-checksum-ipv6",
    "tx-udp_tnl-csum-segmentation",
)


def features(
    ns_path: Path, dev: str, names: tuple[str, ...] = CHECKSUM_FEATURES
) -> dict[str, bool]:
    """Which of `names` are on for dev ({} where ethtool cannot tell: no such device, or a
    driver that does not answer)."""

    def read() -> dict[str, bool]:
        tool = netlink.ethtool()  # only checksum drops need it
        try:
            found = tool.get_features(dev).features
        except Exception:  # pyroute2 raises several kinds for a device it cannot ask
            return {}
        finally:
            tool.close()
        return {n: bool(found[n].enable) for n in names if n in found and found[n].available}

    return netns.run_in(ns_path, read)
