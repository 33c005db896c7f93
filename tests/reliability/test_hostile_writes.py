"""Writes at user-named paths: never through or over what is not a regular file; modes, umask and owner kept.

Every writer of the project is tried on every hostile node of the ``hostile_paths`` fixture (a FIFO, a character
device, a socket, a folder, symlinks to a file, to a folder, to a FIFO and to nowhere): each must refuse with an
``XpuRuntimeError`` and leave the node, and whatever it points at, exactly as it was.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _rel_models import NOT_REGULAR
from typer.testing import CliRunner

from xpuruntime import Policy
from xpuruntime._io import UnsafePathError, atomic_write_bytes, atomic_write_text, check_write_target, write_output
from xpuruntime.errors import XpuRuntimeError

ROOT = Path(__file__).resolve().parents[2]


def _write_json() -> Callable[[Path, dict[str, Any]], None]:
    spec = importlib.util.spec_from_file_location("_bench_common", ROOT / "benchmarks" / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_json


def _lock() -> Any:
    from xpuruntime.policies.lock import Lock

    return Lock.create(Policy(execution={"precision": "bf16"}))


def _cli_schema(path: Path) -> None:
    from xpuruntime.cli import app

    result = CliRunner().invoke(app, ["policy", "schema", "-o", str(path)])
    if result.exit_code != 0 and isinstance(result.exception, SystemExit):
        raise XpuRuntimeError(result.output)  # the CLI's own clean error, re-raised for the common assertions
    assert result.exit_code == 0, result.output


# name -> (suffix the writer needs, write(path))
WRITERS: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "atomic_write_bytes": ("", lambda p: atomic_write_bytes(p, b"\x00data")),
    "atomic_write_text": ("", lambda p: atomic_write_text(p, "text\n")),
    "write_output": ("", lambda p: write_output(p, "text\n")),
    "Policy.save": (".yaml", lambda p: Policy(execution={"precision": "bf16"}).save(p)),
    "Lock.save": (".json", lambda p: _lock().save(p)),
    "benchmarks write_json": (".json", lambda p: _write_json()(p, {"rows": []})),
    "cli policy schema -o": (".json", _cli_schema),
}


def _snapshot(path: Path) -> tuple[Any, ...]:
    st = os.lstat(path)
    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
    return stat.S_IFMT(st.st_mode), st.st_ino, stat.S_IMODE(st.st_mode), link


def _named(path: Path, suffix: str) -> Path:
    """The hostile node under a name with the suffix a writer insists on (moved, so it stays one node)."""
    if not suffix or path.name.endswith(suffix):
        return path
    if path.parent.name != "hostile":  # /dev/null itself (non-root runs): not ours to rename
        pytest.skip("the system's own device is not renamed")
    target = path.with_name(path.name + suffix)
    os.rename(path, target)
    return target


@pytest.mark.parametrize("kind", NOT_REGULAR)
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_writer_refuses_what_is_not_a_regular_file_and_leaves_it(hostile_paths: dict[str, Path], kind: str,
                                                                   writer: str) -> None:
    if kind not in hostile_paths:
        pytest.skip(f"no {kind} can be made here")
    suffix, write = WRITERS[writer]
    path = _named(hostile_paths[kind], suffix)
    before, target_text = _snapshot(path), hostile_paths["link_target"].read_text()
    with pytest.raises(XpuRuntimeError, match="not a regular file|directory|folder"):
        write(path)
    assert _snapshot(path) == before  # neither replaced nor re-moded
    assert hostile_paths["link_target"].read_text() == target_text  # nothing written through a link
    assert not (path.parent / "nowhere").exists()  # the dangling link's target was not created
    assert not [n for n in os.listdir(path.parent) if n.endswith(".tmp")]  # no temporary left behind


def test_the_error_says_what_the_node_is_and_is_also_an_os_error(hostile_paths: dict[str, Path]) -> None:
    with pytest.raises(UnsafePathError) as info:
        atomic_write_text(hostile_paths["fifo"], "x")
    assert isinstance(info.value, OSError) and "a FIFO, not a regular file" in str(info.value)
    with pytest.raises(UnsafePathError, match="a symlink"):
        check_write_target(hostile_paths["symlink_to_file"])
    assert check_write_target(hostile_paths["regular"]).st_size > 0 and check_write_target(Path("/nope/x")) is None


@pytest.fixture
def umask() -> Iterator[Callable[[int], None]]:
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("writer", list(WRITERS))
def test_an_existing_file_keeps_its_mode(hostile_paths: dict[str, Path], writer: str) -> None:
    suffix, write = WRITERS[writer]
    path = _named(hostile_paths["regular"], suffix)  # 0o640
    write(path)
    assert _mode(path) == 0o640 and path.read_bytes() != b"a regular file\n"


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_new_file_honours_the_umask(tmp_path: Path, umask: Callable[[int], None], writer: str, mask: int,
                                      expected: int) -> None:
    suffix, write = WRITERS[writer]
    umask(mask)
    path = tmp_path / f"new{suffix}"
    write(path)
    assert _mode(path) == expected


def test_an_explicit_mode_is_exact_whatever_the_umask(tmp_path: Path, umask: Callable[[int], None]) -> None:
    umask(0o000)
    path = atomic_write_bytes(tmp_path / "entry", b"x", mode=0o600)
    assert _mode(path) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_an_existing_file_keeps_its_owner_when_root_rewrites_it(hostile_paths: dict[str, Path]) -> None:
    path = hostile_paths["regular"]
    os.chown(path, 12345, 23456)
    Policy().save(_named(path, ".yaml"))
    st = os.stat(path.with_name(path.name + ".yaml"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (12345, 23456, 0o640)


@pytest.mark.parametrize("name", ["odd_name", "long_name"])
def test_odd_and_longest_names_are_written_atomically(hostile_paths: dict[str, Path], name: str) -> None:
    path = hostile_paths[name]  # a newline, a leading dash, non-ASCII; 255 bytes (the temporary name must fit)
    atomic_write_text(path, "new\n")
    assert path.read_text() == "new\n" and not [n for n in os.listdir(path.parent) if n.endswith(".tmp")]


def test_dash_means_standard_output(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert write_output("-", json.dumps({"a": 1}) + "\n") is None
    assert capsys.readouterr().out == '{"a": 1}\n' and not list(tmp_path.iterdir())  # no file named "-"


def test_cache_entries_replace_a_planted_node_in_our_own_folder(tmp_path: Path) -> None:
    """xpuruntime's own cache folder is the one place a squatter is replaced rather than refused."""
    os.mkfifo(tmp_path / "entry")
    atomic_write_bytes(tmp_path / "entry", b"x", mode=0o600, replace_special=True)
    assert (tmp_path / "entry").read_bytes() == b"x" and _mode(tmp_path / "entry") == 0o600
