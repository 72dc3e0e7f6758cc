"""Pre-flight checks of the host: privileges, kernel BTF, tracefs and bpffs."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from tracer.errors import BtfMissing, MountFailed, NotRoot

VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")
TRACEFS = Path("/sys/kernel/tracing")
BPFFS = Path("/sys/fs/bpf")
_TRACEFS_MAGIC = 0x74726163
_BPFFS_MAGIC = 0xCAFE4A11


def require_root() -> None:
    if os.geteuid() != 0:
        raise NotRoot(
            "droptrace needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN): run it with sudo"
        )


# What loading and attaching the programs needs (linux/capability.h): CAP_BPF and
# CAP_PERFMON since 5.8, or CAP_SYS_ADMIN before and instead; CAP_NET_ADMIN for namespaces.
_CAP_NET_ADMIN, _CAP_SYS_ADMIN, _CAP_PERFMON, _CAP_BPF = 12, 21, 38, 39


def missing_capabilities() -> list[str]:
    """The capabilities droptrace needs and this process lacks (root may lack them too:
    a container or `setpriv --bounding-set` takes them away)."""
    try:
        status = Path("/proc/self/status").read_text()
        eff = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("CapEff:")), 16)
    except (OSError, StopIteration, ValueError):
        return []  # cannot tell: let the kernel say
    has = {
        cap: bool(eff >> cap & 1)
        for cap in (_CAP_NET_ADMIN, _CAP_SYS_ADMIN, _CAP_PERFMON, _CAP_BPF)
    }
    missing = []
    if not has[_CAP_SYS_ADMIN] and not (has[_CAP_BPF] and has[_CAP_PERFMON]):
        missing.append("CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)")
    if not has[_CAP_NET_ADMIN]:
        missing.append("CAP_NET_ADMIN")
    return missing


def require_capabilities() -> None:
    missing = missing_capabilities()
    if missing:
        raise NotRoot(f"running as root but without {' and '.join(missing)}: BPF needs them")


def require_btf() -> None:
    if not VMLINUX_BTF.exists():
        raise BtfMissing(
            f"{VMLINUX_BTF} is missing: this kernel was built without CONFIG_DEBUG_INFO_BTF, "
            "which CO-RE needs"
        )


def _is_mounted(path: Path) -> bool:
    return any(
        line.split()[1] == str(path) for line in Path("/proc/mounts").read_text().splitlines()
    )


def _mount(source: str, target: Path, fstype: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
    if libc.mount(source.encode(), str(target).encode(), fstype.encode(), 0, None) != 0:
        err = ctypes.get_errno()
        raise MountFailed(f"cannot mount {fstype} at {target}: {os.strerror(err)}")


def ensure_mounts() -> list[str]:
    """Mount tracefs and bpffs where missing; returns what was mounted, to tell the user."""
    done = []
    for source, target, fstype in (("tracefs", TRACEFS, "tracefs"), ("bpf", BPFFS, "bpf")):
        if target.is_dir() and not _is_mounted(target):
            _mount(source, target, fstype)
            done.append(f"mounted {fstype} at {target}")
    return done
