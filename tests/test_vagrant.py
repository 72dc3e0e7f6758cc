"""The Vagrant lab cannot boot here; it is validated and driven by the same scenario list."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tracer.lab.scenarios import SCENARIOS

VAGRANT = Path(__file__).resolve().parent.parent / "vagrant"


@pytest.mark.skipif(shutil.which("vagrant") is None, reason="vagrant not installed (make install)")
def test_vagrantfile_validates() -> None:
    env = dict(os.environ, VAGRANT_NO_PLUGINS="1", VAGRANT_CHECKPOINT_DISABLE="1")
    p = subprocess.run(
        ["vagrant", "validate", "--ignore-provider"],
        cwd=VAGRANT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr


def test_vagrant_lab_drives_every_scenario_with_its_shared_fault_script() -> None:
    listed = subprocess.run(
        ["bash", str(VAGRANT / "scenario.sh"), "list"], capture_output=True, text=True, timeout=30
    )
    assert listed.returncode == 0, listed.stderr
    for s in SCENARIOS:
        assert s.name in listed.stdout
        assert s.category in listed.stdout
    assert "tracer/lab/scenarios" in (VAGRANT / "scenario.sh").read_text()
