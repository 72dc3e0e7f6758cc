"""setuptools hooks for a wheel that runs without a compiler (pyproject.toml has the rest).

`python -m build` and `pip wheel .` compile bpf/*.bpf.c with the Makefile's `bpf` target, and
generate the CRI client's modules with its `cri` target, straight into the wheel's tree:
clang, bpftool, make and the build host's kernel BTF are needed where the wheel is built,
never where it runs. An editable install (`make install`) builds nothing here: `make bpf`
and `make cri` write into the checkout itself.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
BUILD_TOOLS = ("make", "clang", "bpftool")
VMLINUX_BTF = Path("/sys/kernel/btf/vmlinux")


class BuildWithBpf(build_py):
    """The Python package, then the CO-RE object, the layout header and the build id."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        missing = [tool for tool in BUILD_TOOLS if shutil.which(tool) is None]
        if missing or not VMLINUX_BTF.is_file():
            why = f"{', '.join(missing)} not found" if missing else f"no {VMLINUX_BTF}"
            raise SystemExit(
                f"building droptrace compiles its BPF object: {why} "
                "(apt-get install make clang llvm bpftool; a kernel with BTF)"
            )
        lib = Path(self.build_lib).resolve()
        out = lib / "tracer" / "_bpf"
        # -B: compiled here and now, never an object an earlier build left in the checkout.
        with tempfile.TemporaryDirectory(prefix="droptrace-bpf-") as scratch:
            subprocess.run(
                ["make", "-s", "-B", "bpf", f"OBJDIR={out}", f"BUILD={scratch}"],
                cwd=HERE,
                check=True,
            )
        # The CRI client's modules (tracer._cri), with the grpcio-tools of this build
        # (pyproject's build requirements); without them the client compiles cri.proto when
        # it first talks to a runtime.
        if importlib.util.find_spec("grpc_tools") is not None:
            subprocess.run(
                ["make", "-s", "-B", "cri", f"PYOUT={lib}", f"PY={sys.executable}"],
                cwd=HERE,
                check=True,
            )


class ArchWheel(bdist_wheel):
    """Tagged py3-none-linux_<arch>: no Python extension, but the BPF object is built for
    this machine's architecture (its kprobe programs read that architecture's registers)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.plat_name_supplied = True  # get_tag() then uses plat_name, not "any"


setup(cmdclass={"build_py": BuildWithBpf, "bdist_wheel": ArchWheel})
