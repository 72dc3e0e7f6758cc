"""Whether a Kubernetes API configuration is there at all: a cheap look at files and the
environment, so a host without one never imports the API client (tenths of a second)."""

from __future__ import annotations

import os
from pathlib import Path

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def configured() -> bool:
    """Whether any configuration lightkube would read (KubeConfig.from_env) is there."""
    env = os.environ.get("KUBECONFIG")
    if env:
        return any(Path(p).expanduser().exists() for p in env.split(os.pathsep) if p)
    if Path("~/.kube/config").expanduser().exists():
        return True
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and SERVICE_ACCOUNT_TOKEN.exists()
