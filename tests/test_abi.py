"""The event layout has one definition (bpf/events.h); the object's BTF must agree with it."""

from __future__ import annotations

import ctypes

from tracer import abi, libbpf
from tracer.hooks import object_path


def test_events_h_matches_the_btf_clang_wrote_into_the_object() -> None:
    with libbpf.BpfObject(object_path()) as obj:  # open only: no root, nothing loaded
        for name in ("drop_event", "counter_key", "dt_config"):
            assert obj.btf_struct_size(name) == ctypes.sizeof(abi.struct(name)), name
        abi.check_layout(obj.btf_struct_size)
