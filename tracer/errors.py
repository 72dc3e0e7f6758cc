"""One exception per failure a user can meet; cli.py maps each to one line and an exit code."""

from __future__ import annotations


class DroptraceError(Exception):
    """A failure to report as one line, without a traceback."""

    exit_code = 1


class OutputClosed(DroptraceError):
    """Whoever read the output stopped reading (`| head`): end quietly, as a filter does."""

    exit_code = 0


class WriteFailed(DroptraceError):
    """A file the user asked for (--pcap) could not be written on (disk full, I/O error)."""

    exit_code = 1


class UsageError(DroptraceError):
    """Bad input on the command line (CIDR, reason, interface, namespace...)."""

    exit_code = 2


class NotRoot(DroptraceError):
    exit_code = 77


class LibbpfMissing(DroptraceError):
    exit_code = 69


class BtfMissing(DroptraceError):
    exit_code = 69


class BpfObjectMissing(DroptraceError):
    exit_code = 69


class HookUnavailable(DroptraceError):
    """No program of a hook family could be loaded; degrades a family, fatal only for kfree_skb."""

    exit_code = 69


class MountFailed(DroptraceError):
    exit_code = 69


class UnknownNetns(UsageError):
    pass


class UnknownInterface(UsageError):
    pass


class BadCidr(UsageError):
    pass


class UnknownReason(UsageError):
    pass


class UnknownPod(UsageError):
    pass


class AmbiguousPod(UsageError):
    pass


class ApiUnreachable(DroptraceError):
    """No Kubernetes configuration, or the API server did not answer (kubectl-droptrace)."""

    exit_code = 69


class ApiRefused(DroptraceError):
    """The API server answered with an error other than 'not found' (e.g. RBAC)."""

    exit_code = 1


class NoAgent(DroptraceError):
    """No droptrace agent runs where one is needed (kubectl-droptrace)."""

    exit_code = 69


class KubectlMissing(DroptraceError):
    exit_code = 69


class PodNotScheduled(DroptraceError):
    """The pod has no node yet, so no agent can trace it."""
