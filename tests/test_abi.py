"""The event layout has one definition (bpf/events.h); the object's BTF must agree with it."""

from __future__ import annotations

import ctypes

from tracer import abi, libbpf
from tracer.hooks import object_path


def test_events_h_matches_the_btf_clang_wrote_into_the_object() -> None:
    with libbpf.BpfObject(object_path()) as obj:  # open only: no root, nothing loaded
        for name in ("drop_event", "drop_packet", "counter_key", "dt_config"):
            assert obj.btf_struct_size(name) == ctypes.sizeof(abi.struct(name)), name
        abi.check_layout(obj.btf_struct_size)


def test_packet_capture_sizes_agree_between_the_object_and_user_space() -> None:
    from tracer.events import record_size
    from tracer.hooks import CAPTURE_BYTES

    assert abi.const("DT_CAPTURE_LEN") == CAPTURE_BYTES
    with libbpf.BpfObject(object_path()) as obj:
        # dt.h's drop_record (a ring record with capture on, a recorder slot) is kernel-side
        # only: user space reads it as an event followed by a packet.
        assert obj.btf_struct_size("drop_record") == record_size()
