"""`droptrace serve`: a real Prometheus scrapes the agent while real drops happen."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import Droptrace, LabUp, MakeNetns, k8s_ns, run_cli, send_udp, sh

pytestmark = pytest.mark.root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError:  # not listening yet
        return 0, ""


def _samples(text: str, name: str) -> dict[str, float]:
    """`name{labels} value` lines of a /metrics page, keyed by the labels text."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            out[labels] = float(value)
    return out


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """start(target) runs a real Prometheus on loopback scraping target every second and
    returns its URL; it is stopped afterwards, also when the test fails."""
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus is not installed: `make test` installs Debian's package")
    procs: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n"
            "scrape_configs:\n  - job_name: droptrace\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        port = _free_port()
        cmd = [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=30)


def _query(url: str, promql: str) -> list[Any]:
    status, body = _get(f"{url}/api/v1/query?query={urllib.parse.quote(promql)}")
    if status != 200:
        return []
    return list(json.loads(body)["data"]["result"])


def test_prometheus_counts_every_no_socket_drop_caused(
    netns: MakeNetns, prometheus: Callable[[str], str]
) -> None:
    ns = netns("serve")
    port = _free_port()
    caused = 60  # more than the stream's per-flow limit lets through: the count stays exact
    with Droptrace("serve", "--listen", f"127.0.0.1:{port}", "--netns", ns, "--node", "n1") as dt:
        url = prometheus(f"127.0.0.1:{port}")
        send_udp(ns, "127.0.0.1", 9, n=caused)
        promql = 'sum(droptrace_drops_total{reason="NO_SOCKET",node="n1"})'
        seen: list[Any] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = _query(url, promql)
            if seen and float(seen[0]["value"][1]) == caused:
                break
            time.sleep(1)
        assert seen, "Prometheus never scraped droptrace_drops_total"
        assert float(seen[0]["value"][1]) == caused
        series = _query(url, 'droptrace_drops_total{reason="NO_SOCKET"}')
        assert len(series) == 1
        assert series[0]["metric"]["category"] == "no_socket"
        assert series[0]["metric"]["iface"] == "lo"
        hooks = _query(url, "droptrace_hook_active == 1")
        assert [h["metric"]["hook"] for h in hooks] == [res_hook(dt)]
        assert _get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        dt.proc.send_signal(signal.SIGTERM)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    # The log pipeline's lines: rate-limited per flow, each with the node.
    assert 0 < len(res.events) < caused
    assert all(ev["node"] == "n1" and ev["reason"] == "NO_SOCKET" for ev in res.events)


def res_hook(dt: Droptrace) -> str:
    """The kfree_skb hook droptrace said it traces with."""
    line = next(line for line in dt._err if Droptrace.READY in line)
    return line.split(Droptrace.READY, 1)[1].strip()


def test_series_beyond_max_series_are_aggregated_and_said(netns: MakeNetns) -> None:
    ns = netns("series")
    port = _free_port()
    args = ("serve", "--listen", f"127.0.0.1:{port}", "--netns", ns, "--max-series", "1")
    with Droptrace(*args) as dt:
        send_udp(ns, "127.0.0.1", 9, n=6)  # NO_SOCKET on lo: the one series allowed
        time.sleep(1)
        sh("nft", "add table ip dtfilter", ns=ns)
        sh("nft", "add chain ip dtfilter in { type filter hook input priority 0; }", ns=ns)
        sh("nft", "add rule ip dtfilter in udp dport 7 drop", ns=ns)
        send_udp(ns, "127.0.0.1", 7, n=2)  # NETFILTER_DROP: beyond the limit
        deadline = time.monotonic() + 15
        drops: dict[str, float] = {}
        while time.monotonic() < deadline:
            _, page = _get(f"http://127.0.0.1:{port}/metrics")
            drops = _samples(page, "droptrace_drops_total")
            if sum(drops.values()) == 8:
                break
            time.sleep(0.5)
        dt.proc.send_signal(signal.SIGTERM)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    assert sum(drops.values()) == 8, drops
    other = {k: v for k, v in drops.items() if 'pod="_other"' in k}
    assert sum(other.values()) == 2, drops
    assert all('reason="NETFILTER_DROP"' in k for k in other)
    assert "more than 1 label sets" in res.stderr


@pytest.mark.parametrize(
    ("listen", "said"),
    [("9750", "is not HOST:PORT"), ("localhost:9750", "is not an IP address")],
)
def test_bad_listen_is_one_line(listen: str, said: str) -> None:
    res = run_cli("serve", "--listen", listen)
    assert res.rc != 0
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert said in res.stderr


def test_port_in_use_is_one_line_and_loads_nothing() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = run_cli("serve", "--listen", f"127.0.0.1:{port}")
    assert res.rc != 0
    lines = res.stderr.strip().splitlines()
    assert lines == [f"droptrace: cannot listen on 127.0.0.1:{port}: Address already in use"]


def test_drops_of_a_local_pod_carry_its_namespace_and_name(lab_up: LabUp) -> None:
    prefix = lab_up("no-route")
    ns = k8s_ns(prefix)
    port = _free_port()
    # This lab's node1 only: other labs running meanwhile use the same pod addresses.
    args = ("serve", "--listen", f"127.0.0.1:{port}", "--netns", prefix + "node1")
    with Droptrace(*args, env={"KUBECONFIG": "/nonexistent/kubeconfig"}) as dt:
        send_udp(prefix + "pod-a", "198.18.1.1", 9, n=4)  # NO_SOCKET on node1, from pod-a
        deadline = time.monotonic() + 15
        drops: dict[str, float] = {}
        while time.monotonic() < deadline and sum(drops.values()) < 4:
            time.sleep(0.5)
            drops = _samples(_get(f"http://127.0.0.1:{port}/metrics")[1], "droptrace_drops_total")
        dt.proc.send_signal(signal.SIGTERM)
        res = dt.wait()
    assert res.rc == 0, res.stderr
    [(labels, n)] = drops.items()
    assert n == 4
    assert f'namespace="{ns}"' in labels and 'pod="pod-a"' in labels, labels
    assert 'reason="NO_SOCKET"' in labels
