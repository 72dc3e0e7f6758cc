"""The lab's pods (lib.sh mkpod) as the node sees them, and their removal on `lab down`.

Each pod directory holds a marker `droptrace-lab` naming its network namespace and cgroup;
only pods whose namespace has the prefix are removed, so concurrent labs keep theirs. The
lab's kubelet root is never a real kubelet's: mkpod registers it among droptrace's extra
kubelet roots (so `droptrace --pod` names lab pods), and the last pod's removal unregisters it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from tracer.enrich.pods_node import EXTRA_KUBELET_ROOTS, KUBELET_ROOT_ENV, kubelet_roots

MARKER = "droptrace-lab"
_CGROUP_TOP = "droptrace-lab"  # mkpod's cgroups live below <cgroup2 root>/droptrace-lab/
LAB_KUBELET_ROOT = Path("/run/droptrace-lab/kubelet")  # lib.sh's default too
REGISTERED = EXTRA_KUBELET_ROOTS / "droptrace-lab"  # lib.sh mkpod links it there


def lab_root() -> Path:
    """Where lib.sh's mkpod writes (the same default droptrace reads)."""
    return Path(os.environ.get(KUBELET_ROOT_ENV) or LAB_KUBELET_ROOT)


def _markers() -> list[tuple[Path, dict[str, str]]]:
    out = []
    for root in kubelet_roots():
        for f in sorted((root / "pods").glob(f"*/{MARKER}")):
            with contextlib.suppress(OSError):
                pairs = (line.split("=", 1) for line in f.read_text().splitlines() if "=" in line)
                out.append((f.parent, dict(pairs)))
    return out


def pod_dirs(prefix: str) -> list[Path]:
    """The kubelet directories of the lab pods with this namespace prefix."""
    return [d for d, m in _markers() if m.get("netns", "").startswith(prefix)]


def refs(prefix: str) -> list[str]:
    """`namespace/name` of the lab pods with this namespace prefix."""
    mine = (m for _, m in _markers() if m.get("netns", "").startswith(prefix))
    return sorted(m["pod"] for m in mine if "pod" in m)


def remove(prefix: str) -> None:
    """Kill what is left in each pod's cgroup, remove the cgroup (and parents it emptied)
    and the pod directory."""
    for d, marker in _markers():
        if not marker.get("netns", "").startswith(prefix):
            continue
        cg = marker.get("cgroup")
        if cg and _CGROUP_TOP in Path(cg).parts:
            _remove_cgroup(Path(cg))
        shutil.rmtree(d, ignore_errors=True)
    # The lab root's directories once no lab pod is left (/run/droptrace-lab by default),
    # and its registration.
    top = lab_root()
    for empty in (top / "pods", top, *((top.parent,) if top == LAB_KUBELET_ROOT else ())):
        try:
            empty.rmdir()
        except OSError:
            break
    if not (top / "pods").exists() and REGISTERED.is_symlink():
        REGISTERED.unlink(missing_ok=True)
        for d in (EXTRA_KUBELET_ROOTS, EXTRA_KUBELET_ROOTS.parent):
            try:
                d.rmdir()
            except OSError:
                break


def _remove_cgroup(cg: Path) -> None:
    with contextlib.suppress(OSError):
        for pid in (cg / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    # The kernel refuses rmdir (EBUSY) until the killed processes have exited.
    deadline = time.monotonic() + 2.0
    while cg.exists():
        try:
            cg.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
    for parent in cg.parents:  # the slices above, once no other lab pod uses them
        try:
            parent.rmdir()
        except OSError:
            break
        if parent.name == _CGROUP_TOP:
            break
