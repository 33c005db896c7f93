"""Item 6 (and 8 for plugins): one bad engine plugin broke every command. A class with ``name = 123``,
``aliases = None``, a ``version()`` that raises, or an entry point without a distribution is skipped with a
warning, which the CLI prints; the built-in engines keep working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
GROUP = "xpuruntime.engines"
BAD = '''
from xpuruntime.inference.engine import Engine

class NumberName(Engine):
    name = 123

class NoAliases(Engine):
    name = "noaliases"
    aliases = None

class EscapeName(Engine):
    name = "esc\\x1b]0;pwned\\x07"

class RaisingVersion(Engine):
    name = "raisingversion"
    @classmethod
    def version(cls):
        raise RuntimeError("boom")

class NoDevices(Engine):
    name = "nodevices"
    devices = None

not_a_class = 42
'''
NAMES = ["NumberName", "NoAliases", "EscapeName", "RaisingVersion", "NoDevices", "not_a_class"]


def _site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    (site / "xpuruntime_bad_plugins.py").write_text(BAD)
    info = site / "xpuruntime_bad_plugins-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xpuruntime-bad-plugins\nVersion: 0.1\n")
    lines = "".join(f"bad{i} = xpuruntime_bad_plugins:{n}\n" for i, n in enumerate(NAMES))
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{lines}")
    return site


def test_bad_plugins_are_skipped_with_a_printed_warning(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(_site(tmp_path))])}
    out = subprocess.run([sys.executable, "-m", "xpuruntime", "engines", "--json"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    names = {e["name"] for e in json.loads(out.stdout)}
    assert "onnxruntime" in names and not names & {"noaliases", "raisingversion", "nodevices"}
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == len(NAMES) and all("was skipped" in w for w in warnings), out.stderr
    assert "\x1b" not in out.stderr and "Traceback" not in out.stderr


def test_an_entry_point_without_a_distribution_is_named_by_its_value():
    from importlib.metadata import EntryPoint

    from xpuruntime.inference.engine import _dist_name

    ep = EntryPoint("x", "mod:Cls", GROUP)
    assert _dist_name(ep) == "'mod:Cls' (no distribution)"
