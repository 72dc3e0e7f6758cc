"""The Python a `make test-kernels` guest runs, compiled and packed before the guest boots.

Under emulation each file access a guest makes to the host's 9p root is a round trip of
milliseconds (a stat: ~3 ms on 5.10 even with init_on_alloc=0), and `import tracer.cli` makes
thousands: 31 s of a 45 s droptrace start. So the trees Python reads (the interpreter's
standard library, the venv, tracer/ and tests/) go, with bytecode compiled here for them,
into one read-only squashfs image the guest mounts through a loop device and binds over the
same paths: its pages stay cached in the guest, and a stat costs microseconds.

Usage (the venv's python): guest_python.py PYCACHE IMAGE
  PYCACHE  a PYTHONPYCACHEPREFIX tree outside the checkout, kept between runs (only what
           changed is compiled again; trees whose sources are gone are pruned)
  IMAGE    the image to write; it holds /paths (the host paths to bind, one a line, each
           found at /root<path>) and /pycache (for PYTHONPYCACHEPREFIX in the guest)
"""

from __future__ import annotations

import compileall
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import warnings
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]


def trees() -> tuple[list[Path], list[Path], list[Path]]:
    """(directories, single files, paths left out of the directories) the guest's Python
    reads: what a bind mount over a directory hides must not be needed there."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    dirs = [stdlib, Path(sys.prefix), CHECKOUT / "tracer", CHECKOUT / "tests"]
    on_path = {Path(p) for p in sys.path if p}
    left_out = [stdlib / "test"]  # the standard library's own tests: 26 MB nobody imports
    left_out += [
        stdlib / d for d in ("site-packages", "dist-packages") if stdlib / d not in on_path
    ]
    # The interpreter and its shared library are mapped by every Python process started.
    files = [Path(os.path.realpath(sys.executable))]
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        lib = Path(sysconfig.get_config_var("LIBDIR")) / sysconfig.get_config_var("INSTSONAME")
        if lib.is_file():
            files.append(Path(os.path.realpath(lib)))
    dirs = [d for i, d in enumerate(dirs) if d.is_dir() and d not in dirs[:i]]
    return dirs, [f for f in files if not any(d in f.parents for d in dirs)], left_out


def compile_for_guest(dirs: list[Path], left_out: list[Path], pycache: Path) -> None:
    """Bytecode for every module of `dirs` into the pycache tree, never beside the sources."""
    sys.pycache_prefix = str(pycache)  # importlib.util.cache_from_source() reads it per call
    warnings.simplefilter("ignore")  # old syntax in some packages' data files: not ours to fix
    skip = re.compile("|".join(re.escape(str(p)) + "/" for p in left_out))
    for d in dirs:
        # A file that does not compile (e.g. a test fixture of some package) stays source.
        compileall.compile_dir(d, quiet=2, workers=os.cpu_count() or 1, rx=skip)


def prune(pycache: Path) -> None:
    """Remove bytecode of trees whose sources are gone (e.g. an earlier CI clone's venv)."""
    for d in sorted((p for p in pycache.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        if not (Path("/") / d.relative_to(pycache)).is_dir():
            shutil.rmtree(d, ignore_errors=True)


def build_image(dirs: list[Path], files: list[Path], left_out: list[Path], pycache: Path,
                image: Path, stage: Path) -> None:  # fmt: skip
    """mksquashfs of a staging root of bind mounts, in a mount namespace of its own (the
    mounts end with it)."""
    binds = "".join(
        f'mkdir -p "$s/root{d}" && mount --bind "{d}" "$s/root{d}"\n' for d in dirs
    ) + "".join(
        f'mkdir -p "$s/root{f.parent}" && touch "$s/root{f}" && mount --bind "{f}" "$s/root{f}"\n'
        for f in files
    )
    paths = "\n".join(str(p) for p in dirs + files)
    excluded = " ".join(f'"root{p}"' for p in left_out)
    # Uncompressed: the guest's CPU is emulated, its reads of the image file are few and large.
    script = f"""set -e
s="{stage}"
mount -t tmpfs staging "$s"
{binds}mkdir "$s/pycache" && mount --bind "{pycache}" "$s/pycache"
printf '%s\\n' '{paths}' >"$s/paths"
mksquashfs "$s" "{image}.tmp" -noappend -no-xattrs -noI -noD -noF -noX -quiet -no-progress \\
  -wildcards -e '... __pycache__' {excluded}
mv "{image}.tmp" "{image}"
"""
    subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                   check=True)  # fmt: skip


def main(pycache: Path, image: Path) -> int:
    started = time.monotonic()
    dirs, files, left_out = trees()
    pycache.mkdir(parents=True, exist_ok=True)
    image.parent.mkdir(parents=True, exist_ok=True)
    compile_for_guest(dirs, left_out, pycache)
    prune(pycache)
    compiled = time.monotonic()
    with tempfile.TemporaryDirectory() as stage:
        build_image(dirs, files, left_out, pycache, image, Path(stage))
    size = image.stat().st_size >> 20
    print(
        f"    guest Python: bytecode {compiled - started:.0f} s, image {size} MB in"
        f" {time.monotonic() - compiled:.0f} s ({', '.join(str(p) for p in dirs + files)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
