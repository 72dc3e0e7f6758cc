"""The bench's floor: an empty program on the tracepoint droptrace uses, nothing else.

`python -m bench.floor OBJECT` (root) loads and attaches OBJECT, built by build() from
bench/floor.bpf.c, with droptrace's own libbpf binding, prints `ready` on stderr and holds
it until SIGINT/SIGTERM. A storm under it costs what the tracepoint's dispatch costs: the
floor under droptrace's filtered configuration.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tracer.libbpf import BpfObject

SOURCE = Path(__file__).with_name("floor.bpf.c")
VMLINUX_H_DIR = Path(__file__).resolve().parent.parent / "build"  # `make bpf` writes vmlinux.h


def build(out_dir: Path) -> Path:
    """Compiles the empty program into out_dir (by the bench, so that the compiler's time and
    memory are not counted as the floor process's)."""
    obj = out_dir / "floor.bpf.o"
    subprocess.run(
        ["clang", "-O2", "-g", "-target", "bpf", f"-I{VMLINUX_H_DIR}", "-c", str(SOURCE),
         "-o", str(obj)],
        check=True,
    )  # fmt: skip
    return obj


def main(argv: list[str]) -> int:
    stop = False

    def on_signal(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with BpfObject(Path(argv[0])) as bpf:
        bpf.load()
        with bpf.attach("kfree_skb_floor"):
            print("ready", file=sys.stderr, flush=True)
            while not stop:
                signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
