"""The event ABI, read from bpf/events.h (its only definition) into ctypes structures.

events.h is kept to fixed-width fields, arrays of them and `#define NAME number`, so a
dozen lines of parsing replace a second hand-written copy of the layout. `check_layout`
compares the result with the BTF clang put into the BPF object.
"""

from __future__ import annotations

import ctypes
import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

_CTYPES: dict[str, type[ctypes._SimpleCData]] = {  # type: ignore[type-arg]
    "__u8": ctypes.c_uint8,
    "__u16": ctypes.c_uint16,
    "__u32": ctypes.c_uint32,
    "__u64": ctypes.c_uint64,
    "__s32": ctypes.c_int32,
    "__s64": ctypes.c_int64,
}
_DEFINE = re.compile(r"^#define\s+(\w+)\s+(\d+)\b", re.M)
_STRUCT = re.compile(r"struct\s+(\w+)\s*\{(.*?)\};", re.S)
_FIELD = re.compile(r"^\s*(__[us]\d+)\s+(\w+)(?:\[(\w+)\])?;", re.M)


def header_path() -> Path:
    """events.h as installed beside the BPF object (make bpf copies it there)."""
    packaged = resources.files("tracer") / "_bpf" / "events.h"
    if packaged.is_file():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "bpf" / "events.h"


@cache
def _parsed() -> tuple[dict[str, int], dict[str, type[ctypes.Structure]]]:
    text = re.sub(r"/\*.*?\*/", "", header_path().read_text(), flags=re.S)
    defines = {name: int(value) for name, value in _DEFINE.findall(text)}
    structs: dict[str, type[ctypes.Structure]] = {}
    for name, body in _STRUCT.findall(text):
        fields: list[tuple[str, Any]] = []
        for ctype, field, count in _FIELD.findall(body):
            base: Any = _CTYPES[ctype]
            if count:
                base = base * (defines[count] if count in defines else int(count))
            fields.append((field, base))
        structs[name] = type(name, (ctypes.Structure,), {"_fields_": fields})
    return defines, structs


def const(name: str) -> int:
    return _parsed()[0][name]


def struct(name: str) -> type[ctypes.Structure]:
    return _parsed()[1][name]


def check_layout(btf_size_of: Callable[[str], int | None]) -> None:
    """Raise if a struct's size in the object's BTF differs from events.h as parsed here."""
    for name, cls in _parsed()[1].items():
        size = btf_size_of(name)
        if size is not None and size != ctypes.sizeof(cls):
            raise RuntimeError(
                f"struct {name} is {size} bytes in the BPF object but {ctypes.sizeof(cls)} in "
                f"{header_path()}: rebuild with `make bpf`"
            )
