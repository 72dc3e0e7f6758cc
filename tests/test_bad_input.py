"""Bad input and a missing environment: one line, a non-zero exit, never a traceback."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.root


def one_line_error(args: tuple[str, ...], **kw: object) -> str:
    res = run_cli(*args, **kw)  # type: ignore[arg-type]
    assert res.rc != 0, res
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("droptrace: ")
    return lines[0]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--ip", "198.51.100.0/33"), "not an IP address or CIDR"),
        (("--ip", "nonsense"), "not an IP address or CIDR"),
        (("--netns", "dt-no-such-namespace"), "unknown network namespace"),
        (("--reason", "NO_SOCKETT"), "did you mean NO_SOCKET"),
        (("--iface", "no-such-if0"), "no interface 'no-such-if0'"),
    ],
)
def test_bad_arguments_give_one_line(args: tuple[str, ...], says: str) -> None:
    assert says in one_line_error(args)


def test_not_root_is_one_line() -> None:
    assert "needs root" in one_line_error(("--duration", "1"), user=65534)


def test_missing_libbpf_is_one_line() -> None:
    line = one_line_error(("--duration", "1"), env={"DROPTRACE_LIBBPF": "/nonexistent/libbpf.so.1"})
    assert "libbpf1" in line


def test_missing_bpf_object_is_one_line() -> None:
    line = one_line_error(("--duration", "1"), env={"DROPTRACE_BPF_DIR": "/nonexistent"})
    assert "make bpf" in line
