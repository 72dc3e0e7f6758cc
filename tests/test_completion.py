"""Shell completion through click's own mechanism, run the way droptrace runs its commands
(tracer.oneline.run_click, standalone_mode=False): the scripts a shell sources, and the
answers a Tab gets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import MakeNetns


def complete(instruction: str, words: str = "", cword: int = 0) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, _DROPTRACE_COMPLETE=instruction, COMP_WORDS=words, COMP_CWORD=str(cword))
    return subprocess.run(
        [sys.executable, "-m", "tracer"], capture_output=True, text=True, timeout=60, env=env
    )


def tab(line: str) -> list[str]:
    """What bash's Tab offers after `line` (its last word is the one being completed)."""
    words = line.split(" ")
    res = complete("bash_complete", line, len(words) - 1)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    return [entry.split(",", 1)[1] for entry in res.stdout.splitlines()]


@pytest.mark.parametrize(
    ("shell", "defines"),
    [
        ("bash", "complete -o nosort -F _droptrace_completion droptrace"),
        ("zsh", "#compdef droptrace"),
        ("fish", "complete --no-files --command droptrace"),
    ],
)
def test_source_script_defines_the_completion_function(shell: str, defines: str) -> None:
    res = complete(f"{shell}_source")
    assert res.returncode == 0, res.stderr
    assert "_droptrace_completion" in res.stdout
    assert defines in res.stdout
    assert "_DROPTRACE_COMPLETE" in res.stdout


def test_tab_completes_commands_options_and_scenarios() -> None:
    assert tab("droptrace la") == ["lab"]
    assert "serve" in tab("droptrace ")
    assert "--netns" in tab("droptrace --ne")
    assert tab("droptrace lab run rp") == ["rp-filter-masquerade"]
    assert "no-route" in tab("droptrace lab up ")


@pytest.mark.root
def test_tab_completes_netns_names(netns: MakeNetns) -> None:
    ns = netns("tab")
    assert ns in tab(f"droptrace --netns {ns[:-1]}")
    assert ns in tab("droptrace serve --netns dt-")
    assert tab("droptrace --netns ho") == ["host"]
