"""`droptrace serve`: the node agent's command."""

from __future__ import annotations

import socket

import click

from tracer import startup
from tracer.commands.common import ip_option, netns_gone, netns_option, one_line_errors, tell
from tracer.serve import DEFAULT_FLOW_LIMIT, DEFAULT_LISTEN, DEFAULT_MAX_SERIES


@click.command()
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    metavar="HOST:PORT",
    help="Serve /metrics and /healthz here (:PORT: every address).",
)
@click.option(
    "--node",
    envvar="NODE_NAME",
    metavar="NAME",
    help="The node label on every series and line  [default: $NODE_NAME, else the host name]",
)
@click.option(
    "--max-series",
    type=click.IntRange(min=1),
    default=DEFAULT_MAX_SERIES,
    show_default=True,
    metavar="N",
    help='Label sets of droptrace_drops_total; beyond, drops are counted under "_other".',
)
@click.option(
    "--flow-limit",
    type=click.IntRange(min=0),
    default=DEFAULT_FLOW_LIMIT,
    show_default=True,
    metavar="N",
    help="JSON lines per second per flow on stdout; the metrics count every drop.",
)
@click.option(
    "--events",
    is_flag=True,
    help="Post Kubernetes Events (Warning PacketsDropped) on the pods whose packets are "
    "dropped: one per pod and cause, its count patched, at most one new a minute.",
)
@netns_option
@ip_option
@one_line_errors
def serve(
    listen: str,
    node: str | None,
    max_series: int,
    flow_limit: int,
    events: bool,
    netns_specs: tuple[str, ...],
    cidrs: tuple[str, ...],
) -> None:
    """Run as a node agent: Prometheus metrics, health, and JSON lines, until SIGTERM."""
    from tracer.serve import agent, parse_listen

    address = parse_listen(listen)
    node = node or socket.gethostname()
    serving = f"serving /metrics and /healthz on {address[0]}:{address[1]}"
    poster = None
    if events:  # before anything is attached: no API configuration is one line
        from tracer.serve.events import EventPoster
        from tracer.serve.events_api import KubeEvents

        api = KubeEvents.connect(node)
        poster = EventPoster(api, node, tell)
        serving += f"; posting Kubernetes Events to {api.server}"
    ready = startup.start(startup.Scope(netns=netns_specs, cidrs=cidrs), pods=True, note=tell)
    pipeline = ready.pipeline()

    def pod_of_netns(inode: int) -> tuple[str, str]:
        pod = pipeline.enricher.pods.by_netns(inode)  # the enricher's pod sources, when built
        return (pod.namespace, pod.name) if pod else ("", "")

    with ready.watch(netns_gone) as stop:
        agent.serve(
            ready.filters,
            pipeline,
            address,
            node,
            max_series,
            flow_limit,
            note=tell,
            on_ready=lambda: ready.tell(tell, serving),
            stop=stop,
            counters=ready.counter_source(pipeline),
            pod_of_netns=pod_of_netns,
            events=poster,
        )
