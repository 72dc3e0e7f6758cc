"""`make bench`: forwarding throughput under a drop storm, with and without tracers.

Each round runs every configuration once per storm shape, in an order rotated every round,
so slow drift of the machine (other load, thermal) spreads over all of them alike.
Throughput is the router's nft DROP rule counter delta over the sender's send time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import kcost, topology
from bench.tracers import DROPTRACE, PEERS, REFERENCES, Outcome, Tracer, cleanup_leftovers

SHAPES = ("one", "many")
# bench-results.json's headline ratios (the worse shape), of the configurations that ran:
# key there -> configuration.
HEADLINE = {k.replace("-", "_"): k for k in ("live", "filtered", "record", "empty-program")}
PEER_NAMES = {k.name for k in (*PEERS, *REFERENCES)}
PREFIX = f"dtbench{os.getpid()}-"  # two benches at once never share a namespace


@dataclass
class Samples:
    pps: list[float] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    exact: list[bool] = field(default_factory=list)


def one_run(
    topo: topology.Topology, tracer: Tracer, shape: str, packets: int, seconds: float, s: Samples
) -> None:
    counted_before = topo.dropped()
    try:
        tracer.start(topo)
        pps = topology.storm(topo, shape, packets, seconds)
    except BaseException:  # Ctrl-C too: no tracer process outlives the bench
        if hasattr(tracer, "kill"):
            tracer.kill()
        raise
    outcome = tracer.stop()
    s.pps.append(pps)
    s.outcomes.append(outcome)
    if outcome.summary:
        # Everything the router's rule dropped while the tracer was attached.
        kernel = topo.dropped() - counted_before
        router = str(topo.netns_inode(topo.router))
        seen = outcome.summary["by_netns"].get(router, {}).get("NETFILTER_DROP", 0)
        s.exact.append(seen == (kernel if tracer.sees_storm else 0))
        outcome.summary["kernel_count"] = kernel
        outcome.summary["router_count"] = seen


KERNEL_ROUNDS = 3


def kernel_cost(
    topo: topology.Topology, shapes: list[str], packets: int, seconds: float
) -> dict[str, dict[str, float]]:
    """What droptrace's kfree_skb program itself costs per drop (bench.kcost: the kernel's
    BPF stats), per shape and configuration, median of a few storms after the rounds: the
    part of a tracer's cost spent in the kernel; the rest is its process's CPU."""
    was = kcost.STATS_SYSCTL.read_text().strip()
    out: dict[str, dict[str, list[float]]] = {}
    try:
        kcost.STATS_SYSCTL.write_text("1")
        configs = kcost.configs(topo)
        for _ in range(KERNEL_ROUNDS):
            for shape in shapes:
                for name in ("live", "filtered-netns"):
                    ns, _, _ = kcost.measure(
                        topo, configs[name], {"this": None}, shape, packets, seconds
                    )
                    out.setdefault(shape, {}).setdefault(name, []).append(ns["this"])
    finally:
        kcost.STATS_SYSCTL.write_text(was)
    return {
        shape: {name: round(statistics.median(v), 1) for name, v in by.items()}
        for shape, by in out.items()
    }


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


TRIM = 0.2  # of the per-round ratios, dropped from each end before averaging


def trimmed_mean(values: list[float]) -> float:
    """The mean of the middle 60 %: as robust as the median to a round the machine spoiled,
    and steadier (it averages more rounds), which matters on a VM whose speed alone varies
    ±7 % between 3-second storms with no tracer at all."""
    if not values:
        return 0.0
    k = int(len(values) * TRIM)
    kept = sorted(values)[k : len(values) - k]
    return statistics.fmean(kept)


def summarise(shape_samples: dict[str, Samples]) -> dict[str, Any]:
    """Per configuration: pps median/min/max, and the ratio to the baseline: the trimmed mean
    over rounds of pps / the same round's baseline pps, so drift of the machine between
    rounds (other load) cancels instead of landing on whichever configuration ran then."""
    out: dict[str, Any] = {}
    base = shape_samples["baseline"].pps
    for name, s in shape_samples.items():
        st = _stats(s.pps)
        ratios = [p / b for p, b in zip(s.pps, base, strict=True) if b]
        entry: dict[str, Any] = {
            **st,
            "ratio": trimmed_mean(ratios),
            "ratio_median": statistics.median(ratios) if ratios else 0.0,
            "cv": statistics.stdev(s.pps) / statistics.fmean(s.pps) if len(s.pps) > 1 else 0.0,
            "pps_by_round": [round(p) for p in s.pps],
        }
        cpu = [o.cpu_seconds for o in s.outcomes if o.cpu_seconds]
        if cpu:
            entry["cpu_seconds_median"] = statistics.median(cpu)
            entry["peak_rss_mb"] = max(o.peak_rss_kb for o in s.outcomes) / 1024
            entry["startup_seconds_median"] = statistics.median(
                o.startup_seconds for o in s.outcomes
            )
        sums = [o.summary for o in s.outcomes if o.summary]
        threads = [x["cpu_seconds"] for x in sums if "cpu_seconds" in x]
        if threads:  # droptrace's own CPU by thread, median over rounds
            entry["thread_cpu_seconds_median"] = {
                t: statistics.median(x[t] for x in threads) for t in threads[0]
            }
        if sums:
            entry["events_emitted"] = sum(x["shown"] for x in sums)
            entry["events_lost"] = sum(x["lost"] for x in sums)
            entry["events_suppressed"] = sum(x.get("suppressed", 0) for x in sums)
            entry["drops_counted"] = sum(x["router_count"] for x in sums)
            entry["drops_kernel"] = sum(x["kernel_count"] for x in sums)
            entry["totals_exact"] = all(s.exact)
        out[name] = entry
    return out


def table(results: dict[str, Any]) -> str:
    lines = [
        "| shape | configuration | median pps | min | max | ratio | tracer CPU s"
        " | reader / explainer CPU s | peak RSS MB | start-up s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for shape, configs in results["shapes"].items():
        for name, e in configs["configs"].items():
            cpu = f"{e['cpu_seconds_median']:.2f}" if "cpu_seconds_median" in e else "-"
            rss = f"{e['peak_rss_mb']:.0f}" if "peak_rss_mb" in e else "-"
            up = f"{e['startup_seconds_median']:.2f}" if "startup_seconds_median" in e else "-"
            t = e.get("thread_cpu_seconds_median")
            threads = f"{t['reader']:.2f} / {t['explainer']:.2f}" if t else "-"
            lines.append(
                f"| {shape} | {name} | {e['median']:,.0f} | {e['min']:,.0f} | {e['max']:,.0f} "
                f"| {e['ratio']:.2f} | {cpu} | {threads} | {rss} | {up} |"
            )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seconds", type=float, default=3.0, help="storm length (upper bound)")
    p.add_argument("--packets", type=int, default=5_000_000, help="storm size (upper bound)")
    p.add_argument("--shapes", default=",".join(SHAPES))
    p.add_argument("--no-peers", action="store_true", help="skip the bpftrace peers")
    p.add_argument(
        "--only",
        default="",
        help="comma-separated configurations besides the baseline (default: all)",
    )
    p.add_argument("--out", default="bench-results.json")
    args = p.parse_args()
    if os.geteuid() != 0:
        print("make bench: run as root (BPF and network namespaces)", file=sys.stderr)
        return 1
    kinds: list[type[Tracer]] = [Tracer, *DROPTRACE, *REFERENCES]
    if not args.no_peers:
        kinds += PEERS
    if args.only:
        wanted = set(args.only.split(","))
        known = {k.name for k in kinds}
        if wanted - known:
            print(
                f"make bench: no configuration {sorted(wanted - known)}; known: {sorted(known)}",
                file=sys.stderr,
            )
            return 2
        kinds = [k for k in kinds if k is Tracer or k.name in wanted]
    shapes = args.shapes.split(",")
    load_before = os.getloadavg()
    started = time.monotonic()
    samples = {shape: {k.name: Samples() for k in kinds} for shape in shapes}
    cleanup_leftovers()
    topo = topology.build(PREFIX)
    try:
        for r in range(args.rounds):
            for shape in shapes:
                order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
                for kind in order:
                    s = samples[shape][kind.name]
                    try:
                        one_run(topo, kind(), shape, args.packets, args.seconds, s)
                    except (RuntimeError, ChildProcessError) as err:
                        # A tracer that failed once (e.g. a busy machine) gets one more try.
                        print(f"retrying {kind.name}: {err}", file=sys.stderr)
                        one_run(topo, kind(), shape, args.packets, args.seconds, s)
                    print(
                        f"round {r + 1}/{args.rounds} {shape:4} {kind.name:15} "
                        f"{s.pps[-1]:>12,.0f} pps",
                        file=sys.stderr,
                        flush=True,
                    )
        ran = {k.name for k in kinds}
        kernel = kernel_cost(topo, shapes, args.packets, args.seconds) if "live" in ran else {}
    finally:
        cleanup_leftovers()
        topology.teardown(topo)
    results = assemble(samples, args, load_before, time.monotonic() - started)
    results["kernel_ns_per_drop"] = kernel
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    spread = ", ".join(
        f"{shape} {c['configs']['baseline']['cv'] * 100:.1f} %"
        for shape, c in results["shapes"].items()
    )
    print(
        f"\nratio: trimmed mean over {args.rounds} rounds of pps / that round's baseline pps;"
        f" the baseline alone varies between rounds by (coefficient of variation) {spread}"
    )
    in_kernel = "; ".join(
        f"{shape}: " + ", ".join(f"{name} {v:.0f}" for name, v in by.items())
        for shape, by in results["kernel_ns_per_drop"].items()
    )
    print(
        f"\nin-kernel ns per drop of droptrace's kfree_skb program (BPF stats, median of"
        f" {KERNEL_ROUNDS} storms; includes the stats' own clock reads): {in_kernel}"
    )
    ratios = "  ".join(
        f"{n}_ratio {results[f'{n}_ratio']:.2f}" for n in HEADLINE if f"{n}_ratio" in results
    )
    print(
        f"\n{ratios}  totals_exact {results['totals_exact']}"
        f"  events emitted {results['events_emitted']:,} lost {results['events_lost']:,}"
        f"\nload average before {results['loadavg_before']} after {results['loadavg_after']};"
        f" {results['seconds']:.0f} s; written to {args.out}"
    )
    return 0


def assemble(
    samples: dict[str, dict[str, Samples]],
    args: argparse.Namespace,
    load_before: tuple[float, float, float],
    seconds: float,
) -> dict[str, Any]:
    shapes: dict[str, Any] = {}
    for shape, by_config in samples.items():
        baseline = statistics.median(by_config["baseline"].pps)
        configs = summarise(by_config)
        headline = {k: c for k, c in HEADLINE.items() if c in configs}
        streams = [n for n in ("live", "filtered") if n in configs]
        live = configs.get("live", {})
        shapes[shape] = {
            "baseline_pps": baseline,
            "configs": configs,
            **{f"{k}_pps": configs[c]["median"] for k, c in headline.items()},
            **{f"{k}_ratio": configs[c]["ratio"] for k, c in headline.items()},
            "events_emitted": live.get("events_emitted", 0),
            "events_lost": live.get("events_lost", 0),
            "events_suppressed": live.get("events_suppressed", 0),
            "totals_exact": all(configs[n]["totals_exact"] for n in streams),
            "peers": {
                n: {"pps": e["median"], "ratio": e["ratio"]}
                for n, e in configs.items()
                if n in PEER_NAMES
            },
            "tracer": {
                n: {
                    "cpu_seconds": e.get("cpu_seconds_median"),
                    "thread_cpu_seconds": e.get("thread_cpu_seconds_median"),
                    "peak_rss_mb": e.get("peak_rss_mb"),
                    "startup_seconds": e.get("startup_seconds_median"),
                }
                for n, e in configs.items()
                if "cpu_seconds_median" in e and n not in PEER_NAMES
            },
        }

    def worst(key: str) -> float:
        return min(float(s[key]) for s in shapes.values())

    first = next(iter(shapes.values()))
    ran = [k for k in HEADLINE if f"{k}_ratio" in first]
    return {
        "baseline_pps": worst("baseline_pps"),
        **{f"{k}_pps": worst(f"{k}_pps") for k in ran},
        **{f"{k}_ratio": worst(f"{k}_ratio") for k in ran},
        "events_emitted": sum(s["events_emitted"] for s in shapes.values()),
        "events_lost": sum(s["events_lost"] for s in shapes.values()),
        "events_suppressed": sum(s["events_suppressed"] for s in shapes.values()),
        "totals_exact": all(s["totals_exact"] for s in shapes.values()),
        "rounds": args.rounds,
        "storm": {"seconds": args.seconds, "packets": args.packets, "generator": "sendmmsg"},
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "peers": {
            n: {
                "pps": min(s["peers"][n]["pps"] for s in shapes.values()),
                "ratio": min(s["peers"][n]["ratio"] for s in shapes.values()),
            }
            for n in first["peers"]
        },
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(seconds, 1),
        "shapes": shapes,
    }


if __name__ == "__main__":
    sys.exit(main())
