"""`kubectl droptrace` command line: parse, look up, stream. Every DroptraceError becomes
one line (`kubectl-droptrace: ...`) and an exit code, as in tracer/cli.py."""

from __future__ import annotations

import shutil
import sys
from typing import NoReturn

import click

from tracer import oneline
from tracer.errors import KubectlMissing, UsageError
from tracer.kubectl.cluster import Cluster, PodPlace
from tracer.kubectl.streams import Ended, Streams, exec_command

PROG = "kubectl-droptrace"


def _fail(message: str, code: int) -> NoReturn:
    oneline.fail(PROG, message, code)


def _tell(message: str) -> None:
    click.echo(f"{PROG}: {message}", err=True)


one_line_errors = oneline.one_line_errors(PROG, kernel=False)


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="Arguments after -- go to droptrace in the agent, e.g. "
    "`kubectl droptrace web-0 -- --reason NO_SOCKET`.",
)
@click.argument("pod", required=False)
@click.option(
    "-n",
    "--namespace",
    metavar="NAMESPACE",
    help="The POD's namespace [default: the kubeconfig context's, else default].",
)
@click.option(
    "--all-nodes",
    is_flag=True,
    help="Run in the agent of every node and merge the lines, each with its node: every drop "
    "on each node, or with POD, that pod's traffic wherever it crosses a node.",
)
@click.option("--json", "as_json", is_flag=True, help='JSON lines (with "node" on --all-nodes).')
@click.option("--duration", type=click.FloatRange(min=0), metavar="S", help="Stop after S seconds.")
@click.option(
    "--count", type=click.IntRange(min=1), metavar="N", help="Stop after N drops (per node)."
)
@click.option(
    "--kubectl",
    "kubectl",
    envvar="KUBECTL",
    default="kubectl",
    show_default=True,
    metavar="PATH",
    help="The kubectl that runs `kubectl exec` (also $KUBECTL).",
)
@click.pass_context
@one_line_errors
def command(
    ctx: click.Context,
    pod: str | None,
    namespace: str | None,
    all_nodes: bool,
    as_json: bool,
    duration: float | None,
    count: int | None,
    kubectl: str,
) -> int:
    """Show the drops of POD's traffic live, from the droptrace agent on its node."""
    extra: list[str] = ctx.obj or []
    if not pod and not all_nodes:
        raise UsageError("give a POD (kubectl droptrace POD [-n NAMESPACE]) or --all-nodes")
    if namespace and not pod:
        raise UsageError("-n/--namespace is the POD's namespace; give a POD too")
    cluster = Cluster()
    args: list[str] = []
    place: PodPlace | None = None
    if pod:  # also with --all-nodes: an unknown pod is one line here, not one per node
        place = cluster.pod(pod, namespace or cluster.namespace)
        args += ["--pod", place.name, "-n", place.namespace]
    merge = place is None or all_nodes  # every agent, lines tagged with their node
    if merge:
        agents, notes = cluster.agents()
    else:
        assert place is not None
        agents, notes = [cluster.agent_on(place.node)], []
    args += ["--json"] if as_json else []
    args += ["--duration", f"{duration:g}"] if duration is not None else []
    args += ["--count", str(count)] if count is not None else []
    args += extra
    exe = _kubectl(kubectl)
    for note in notes:
        _tell(note)
    if merge:
        _tell(f"droptrace on {len(agents)} nodes: {', '.join(a.node for a in agents)}")
    elif place is not None:
        _tell(f"pod {place.ref} is on node {place.node}: droptrace in agent {agents[0].name}")
    oneline.sigterm_as_interrupt()
    streams = Streams(merge=merge, as_json=as_json)
    commands = [(agent, exec_command(exe, agent, args)) for agent in agents]
    if not merge:
        return _single(streams.run(commands))
    ended = streams.run(commands, on_end=_report_failure)
    return 1 if all(e.failed for e in ended) else 0


def _single(ended: list[Ended]) -> int:
    """kubectl exec's own exit code is the remote droptrace's; a stop by Ctrl-C is 0 when
    droptrace ended cleanly, as droptrace's own Ctrl-C."""
    e = ended[0]
    return 130 if e.stopped and e.returncode >= 128 else e.returncode


def _report_failure(e: Ended) -> None:
    if e.failed:
        _tell(f"node {e.agent.node}: droptrace in agent {e.agent.name} ended with {e.returncode}")


def _kubectl(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise KubectlMissing(f"{name} not found; name it with --kubectl PATH or $KUBECTL")
    return path


def split_extra(argv: list[str]) -> tuple[list[str], list[str]]:
    """Our arguments, and droptrace's (everything after the first --)."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


def main(argv: list[str] | None = None) -> None:
    ours, extra = split_extra(sys.argv[1:] if argv is None else argv)
    try:
        rc = command.main(ours, prog_name="kubectl droptrace", standalone_mode=False, obj=extra)
    except click.ClickException as err:  # bad arguments: one line too, as droptrace's own
        _fail(f"{err.format_message()} (kubectl droptrace --help)", err.exit_code)
    except click.Abort:
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)
