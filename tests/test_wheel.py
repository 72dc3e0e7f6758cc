"""The wheel: built the way `python -m build` builds it (an sdist of this checkout's files, then
the wheel from that sdist, the BPF object compiled on the way), installed into a fresh venv,
and run where no compiler, no bpftool, no make and no checkout can be reached: it must still
trace and explain a real drop."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import Droptrace, MakeNetns, send_udp, sh

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# What builds the BPF object, and any other compiler: none of it is on the installed PATH.
TOOLCHAIN = re.compile(r"^(clang|llc|lld|ld\.lld|llvm|opt-|bpftool|gcc|g\+\+|cc|c\+\+|cpp|make)")
TOOLCHAIN_ANYWHERE = re.compile(r"-(gcc|g\+\+|cpp)(-[\d.]+)?$")


@dataclass(frozen=True)
class Installed:
    wheel: Path
    sdist: Path
    venv: Path
    path: str  # PATH of this machine's commands less every compiler and BPF tool
    home: Path  # an empty working directory, far from the checkout

    @property
    def droptrace(self) -> str:
        return str(self.venv / "bin" / "droptrace")


def _checkout_copy(dest: Path) -> None:
    """The checkout's files as git sees them (tracked and new, never ignored build output)."""
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z", "-co", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def _path_without_toolchain(bindir: Path) -> str:
    bindir.mkdir()
    for d in map(Path, SYSTEM_PATH):
        for exe in sorted(d.iterdir()) if d.is_dir() else ():
            name = exe.name
            if TOOLCHAIN.match(name) or TOOLCHAIN_ANYWHERE.search(name):
                continue
            if not (bindir / name).exists() and exe.is_file():
                (bindir / name).symlink_to(exe)
    return str(bindir)


def _run(*cmd: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    assert p.returncode == 0, f"{cmd}: {p.stderr[-3000:]}"
    return p  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    """Build once for the module; the sources, wheel and venv are removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="dt-wheel-") as tmp:
        top = Path(tmp)
        src, dist, venv, home = top / "src", top / "dist", top / "venv", top / "home"
        src.mkdir()
        home.mkdir()
        _checkout_copy(src)
        _run(sys.executable, "-m", "build", "--outdir", dist, src, timeout=600)
        (wheel,) = dist.glob("droptrace-*.whl")
        (sdist,) = dist.glob("droptrace-*.tar.gz")
        _run(sys.executable, "-m", "venv", venv)
        _run(venv / "bin/pip", "install", "-q", "--disable-pip-version-check", wheel, timeout=600)
        yield Installed(wheel, sdist, venv, _path_without_toolchain(top / "bin"), home)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in the environment points back at the checkout or its object."""
    for var in ("PYTHONPATH", "DROPTRACE_BPF_DIR", "DROPTRACE_LIBBPF", "VIRTUAL_ENV"):
        monkeypatch.delenv(var, raising=False)


def test_wheel_carries_the_object_built_from_the_sdist(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    for shipped in ("tracer/_bpf/drop.bpf.o", "tracer/_bpf/events.h", "tracer/_bpf/build-id"):
        assert shipped in names
    # The CRI client's modules, generated at build: a node never compiles cri.proto.
    assert {"tracer/_cri/cri_pb2.py", "tracer/_cri/cri_pb2_grpc.py"} <= set(names)
    loaded = _run(
        installed.venv / "bin/python", "-c",
        "from tracer.enrich import pods_cri; print(pods_cri.api().pb.__name__)",
        cwd=installed.home,
    )  # fmt: skip
    assert loaded.stdout.strip() == "tracer._cri.cri_pb2", loaded.stdout
    # For this machine's architecture: the object is, though no Python extension is.
    arch = subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip()
    assert installed.wheel.name.endswith(f"-py3-none-linux_{arch}.whl"), installed.wheel.name
    # The sdist has the sources to compile, never an object left in a checkout.
    with tarfile.open(installed.sdist) as sdist:
        members = sdist.getnames()
    assert any(m.endswith("/bpf/drop.bpf.c") for m in members)
    assert any(m.endswith("/Makefile") for m in members)
    assert not any(m.endswith(".bpf.o") or "/tracer/_cri/" in m for m in members)


def test_installed_wheel_traces_a_udp_drop_with_no_compiler_or_checkout(
    installed: Installed, netns: MakeNetns, clean_env: None
) -> None:
    for tool in ("clang", "bpftool", "make", "gcc", "llc"):
        assert shutil.which(tool, path=installed.path) is None, tool
    assert shutil.which("ip", path=installed.path)  # iproute2, as the host has it
    where = _run(
        installed.venv / "bin/python", "-c", "import tracer; print(tracer.__file__)",
        cwd=installed.home,
    )  # fmt: skip
    assert where.stdout.startswith(str(installed.venv)), where.stdout
    ns = netns("whl")
    sh("ip", "addr", "add", "192.0.2.1/32", "dev", "lo", ns=ns)
    env = {"PATH": installed.path, "KUBECONFIG": "/nonexistent/kubeconfig"}
    args = ("--json", "--netns", ns, "--duration", "3")
    with Droptrace(*args, env=env, program=[installed.droptrace], cwd=installed.home) as dt:
        send_udp(ns, "192.0.2.1", 9, n=2)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert len(res.events) == 2, res.events
    for ev in res.events:
        assert (ev["reason"], ev["category"], ev["netns"]) == ("NO_SOCKET", "no_socket", ns)
        assert (ev["proto"], ev["dst"], ev["dport"]) == ("udp", "192.0.2.1", 9)
        assert ev["explanation"] and ev["fix"]
    assert "NO_SOCKET 2" in res.stderr


def test_installed_version_names_the_shipped_object_build_id(
    installed: Installed, clean_env: None
) -> None:
    wheel = zipfile.ZipFile(installed.wheel)
    recorded = dict(
        line.split(" ", 1) for line in wheel.read("tracer/_bpf/build-id").decode().splitlines()
    )
    digest = hashlib.sha256(wheel.read("tracer/_bpf/drop.bpf.o")).hexdigest()[:16]
    assert recorded["build_id"] == digest
    res = _run(installed.droptrace, "--version", cwd=installed.home, env={"PATH": installed.path})
    line = res.stdout.strip()
    assert line.startswith("droptrace 0.1.0, ") and f"BPF build id {digest} (" in line, line
    assert "clang" in line and "changed since" not in line, line


def test_installed_wheel_without_libbpf_says_which_package_in_one_line(
    installed: Installed, clean_env: None
) -> None:
    env = {"PATH": installed.path, "DROPTRACE_LIBBPF": "/nonexistent/libbpf.so.1"}
    p = subprocess.run(
        [installed.droptrace, "--duration", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=installed.home,
        env=env,
    )
    assert p.returncode == 69, p.stderr
    (line,) = p.stderr.strip().splitlines()
    assert line.startswith("droptrace: ") and "install libbpf1" in line, line
