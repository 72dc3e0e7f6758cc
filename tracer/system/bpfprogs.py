"""BPF programs by id (name, tag) and those attached to a device with tcx, through libbpf's
plain syscall wrappers. tcx (6.6+) attaches by BPF link and shows in no tc listing."""

from __future__ import annotations

import ctypes
import os

from tracer import libbpf

# enum bpf_attach_type (uapi, stable numbers)
TCX = {"ingress": 46, "egress": 47}


class _ProgInfo(ctypes.Structure):
    """The head of struct bpf_prog_info (uapi: fields are only ever appended)."""

    _fields_ = (
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
    )


def tcx_programs(ifindex: int, direction: str) -> list[int]:
    """Ids of the programs tcx runs on ifindex (of the calling thread's namespace), in order;
    [] where the kernel has no tcx or droptrace may not ask."""
    lb = libbpf.lib()
    ids = (ctypes.c_uint32 * 64)()
    count = ctypes.c_uint32(len(ids))
    flags = ctypes.c_uint32(0)
    rc = lb.bpf_prog_query(ifindex, TCX[direction], 0, ctypes.byref(flags), ids, count)
    return list(ids[: count.value]) if rc == 0 else []


def prog_info(prog_id: int) -> tuple[str, str] | None:
    """(name, tag) of a loaded program, or None if it is gone."""
    lb = libbpf.lib()
    fd = lb.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return None
    try:
        info = _ProgInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if lb.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
            return None
        return info.name.decode(errors="replace"), bytes(info.tag).hex()
    finally:
        os.close(fd)
