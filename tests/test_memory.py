"""What droptrace keeps in memory (issue 21): the kernel's symbols as a compact table read a
chunk at a time, and caches that stay under their bounds however many flows a session sees."""

from __future__ import annotations

from pathlib import Path

from tracer.system import kernel


def _kallsyms(tmp_path: Path, lines: list[tuple[int, str, str]], tail: str = "\n") -> Path:
    path = tmp_path / "kallsyms"
    path.write_text("\n".join(f"{a:016x} {kind} {name}" for a, kind, name in lines) + tail)
    return path


def test_kernel_symbols_name_addresses_across_read_chunks_and_modules_placed_after(
    tmp_path: Path,
) -> None:
    base = 0xFFFFFFFF81000000
    own = [(base + 0x10 * i, "T" if i % 3 else "t", f"func_{i}") for i in range(20000)]
    data = [(base + 0x10 * i + 8, "D", f"data_{i}") for i in range(0, 20000, 7)]
    # Modules follow the kernel's own symbols in the file, at lower and higher addresses.
    modules = [(0xFFFFFFFFC0000000 + 0x10 * i, "t", f"mod_{i}\t[m]") for i in range(50)]
    progs = [(0xFFFFFFFF80000000 + 0x10 * i, "t", f"bpf_prog_{i}\t[bpf]") for i in range(30)]
    path = _kallsyms(tmp_path, sorted(own + data) + modules + progs, tail="")  # no last \n
    assert path.stat().st_size > 4 * kernel._CHUNK  # names cut by chunks are whole again

    symbols = kernel.KernelSymbols(path)
    assert symbols.name(base) == "func_0"
    assert symbols.name(base + 0x10 * 12345 + 9) == "func_12345"  # data symbols are skipped
    assert symbols.name(base + 0x10 * 19999) == "func_19999"
    assert symbols.name(0xFFFFFFFFC0000000 + 0x10 * 49 + 2) == "mod_49"  # the last line
    assert symbols.name(0xFFFFFFFF80000000 + 0x10 * 29) == "bpf_prog_29"
    assert symbols.name(0x1000) == "0x1000"  # below every symbol


def test_kernel_symbols_without_addresses_name_nothing(tmp_path: Path) -> None:
    """kptr_restrict shows every address as zero to a reader without CAP_SYSLOG."""
    path = _kallsyms(tmp_path, [(0, "T", "a"), (0, "t", "b")])
    assert kernel.KernelSymbols(path).name(0xFFFFFFFF81000000) == "0xffffffff81000000"
