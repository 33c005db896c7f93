"""Shell completion is typer's: ``xpuruntime --install-completion`` / ``--show-completion``."""

from __future__ import annotations

import os
import subprocess
import sys


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xpuruntime", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_show_completion_prints_a_bash_script():
    result = _cli("--show-completion", "bash")
    assert result.returncode == 0, result.stderr
    assert "_XPURUNTIME_COMPLETE" in result.stdout and "complete" in result.stdout


def test_completion_completes_commands():
    result = _cli(_XPURUNTIME_COMPLETE="complete_bash", COMP_WORDS="xpuruntime rep", COMP_CWORD="1")
    assert result.stdout.split() == ["report"]
