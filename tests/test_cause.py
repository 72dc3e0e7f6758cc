"""Kernels without drop reasons: the cause hooks and the location name the drop (no root)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from tracer import abi
from tracer.causes import attach as causes
from tracer.causes.facts import facts
from tracer.doctor import hook_findings
from tracer.hooks import object_path
from tracer.libbpf import BpfObject
from tracer.model import Drop
from tracer.model.findings import Level
from tracer.model.tracing import HookReport, HookState, HookStatus


def drop(cause: int = 0, nf_hook: int = 0, nf_pf: int = 0) -> Drop:
    return Drop(0, 0, 0, 1, 2, 60, 0, 0x800, 17, IPv4Address("192.0.2.2"),
                IPv4Address("198.51.100.2"), 40000, 5353, None, None, 1,
                cause=cause, nf_hook=nf_hook, nf_pf=nf_pf)  # fmt: skip


def test_fib_validate_source_exdev_is_an_rp_filter_drop_on_a_5_10_kernel() -> None:
    reason, ev = facts(drop(abi.const("DT_HOOK_RPFILTER")), "UNKNOWN", "ip_rcv_finish_core")
    assert ev is not None
    assert reason == "IP_RPFILTER" and ev.reason_inferred is True
    assert "-EXDEV" in ev.cause


def test_nf_hook_slow_drop_names_hook_and_family() -> None:
    reason, ev = facts(drop(abi.const("DT_HOOK_NETFILTER"), 2, 2), "UNKNOWN", "nf_hook_slow")
    assert reason == "NETFILTER_DROP"
    assert ev is not None and ev.json()["netfilter"] == {"hook": "FORWARD", "family": "ipv4"}


def test_a_location_that_drops_for_one_reason_names_it() -> None:
    assert facts(drop(), "UNKNOWN", "__udp4_lib_rcv")[0] == "NO_SOCKET"


def test_routing_drops_stay_unknown_for_the_routing_evidence_to_decide() -> None:
    assert facts(drop(), "UNKNOWN", "ip_error") == ("UNKNOWN", None)


def test_the_kernels_own_reason_wins_and_the_hook_only_adds_evidence() -> None:
    reason, ev = facts(drop(abi.const("DT_HOOK_NETFILTER"), 1, 2), "NETFILTER_DROP", "nf_hook_slow")
    assert ev is not None
    assert reason == "NETFILTER_DROP" and "reason_inferred" not in ev.json()
    assert ev.netfilter is not None and ev.netfilter.hook == "INPUT"


def test_every_cause_program_is_in_the_object() -> None:
    with BpfObject(object_path()) as obj:  # open only: no root, nothing loaded
        for name in causes.programs(("fexit", "kprobe")):
            obj.set_autoload(name, False)  # raises KeyError if the program is missing


def test_doctor_warns_about_missing_cause_hooks_only_without_drop_reasons() -> None:
    hooks = [
        HookStatus("tp_btf/kfree_skb", HookState.ACTIVE),
        HookStatus("kretprobe/nf_hook_slow", HookState.REFUSED, "no kprobes", cause=True),
    ]
    with_reasons = hook_findings(HookReport(hooks, kernel_reasons=True))
    assert all(f.level is Level.OK for f in with_reasons)
    without = hook_findings(HookReport(hooks, kernel_reasons=False))
    assert [f.level for f in without] == [Level.OK, Level.WARN]


def test_cause_hooks_are_not_loaded_where_kfree_skb_gives_reasons(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # There they would only add evidence, and fexit on nf_hook_slow runs for every packet.
    monkeypatch.delenv(causes.FORCE_ENV, raising=False)
    assert causes.plans(needed=False) == ((),)
    assert causes.plans(needed=True) == causes.LOAD_PLANS
    monkeypatch.setenv(causes.FORCE_ENV, "on")  # to check the hooks on a newer kernel
    assert causes.plans(needed=False) == causes.LOAD_PLANS
