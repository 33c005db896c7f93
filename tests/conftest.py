"""Shared test setup: what a test needs from this machine is decided here, in one place.

Markers (registered in pyproject.toml):

- ``torch``: the test needs torch. Without torch, a marked test is skipped, and a module whose module-level
  ``pytestmark`` names ``pytest.mark.torch`` is skipped without being imported (so it may ``import torch`` at the
  top). ``pip install -e ".[dev]"`` without torch therefore runs everything else and skips the rest.
- ``gpu`` / ``gpu("torch", "onnxruntime")``: the test needs a CUDA device; with arguments, also the CUDA build of
  those libraries (torch: ``torch.cuda.is_available()``; onnxruntime: its CUDA provider).
- ``no_cuda("torch")`` / ``no_cuda("onnxruntime")`` / ``no_cuda``: the test checks what happens where that library
  (or, without arguments, this machine) cannot use CUDA; it is skipped where it can.

Only the machine decides a skip here: a test that runs and fails stays a failure.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import os
from pathlib import Path

import pytest


def _hypothesis_profile() -> None:
    """The property tests (hypothesis) draw the same examples on every run: a CI run is reproducible, and what
    passed before is what runs again (a random draw once met an OpenVINO crash in CI, an axis of -404620279021569,
    now refused and tested in a child process). ``XPURUNTIME_FUZZ_RANDOM=1`` draws new examples (exploring;
    ``XPURUNTIME_FUZZ_EXAMPLES`` sets how many): run it with ``-p xdist -n 2`` or expect an engine crash to end the
    run, which ``test_damaged_models_never_crash_the_process`` checks in a child process for its fixed seeds."""
    try:
        from hypothesis import settings
    except ImportError:  # the property tests importorskip it themselves
        return
    settings.register_profile("xpuruntime", derandomize=True, database=None)
    settings.register_profile("xpuruntime-explore", derandomize=False)
    settings.load_profile("xpuruntime-explore" if os.environ.get("XPURUNTIME_FUZZ_RANDOM") == "1" else "xpuruntime")


_hypothesis_profile()

_NEEDS_TORCH = "needs torch: pip install 'xpuruntime[torch]'"
_NO_DEVICE = "needs a CUDA device (none found through NVML or cuda.core)"
_NO_CUDA_BUILD = {
    "torch": "this torch has no CUDA (a CPU build): install a CUDA build of torch",
    "onnxruntime": "this onnxruntime has no CUDA provider: install onnxruntime-gpu (the `gpu` extra)",
}


@functools.cache
def _has_torch() -> bool:
    return importlib.util.find_spec("torch") is not None  # installed but broken: the import fails loudly


@functools.cache
def _cuda_device() -> bool:
    from xpuruntime.runtime.devices import get_device_count

    return get_device_count("cuda") > 0


@functools.cache
def _cuda_build(library: str) -> bool:
    """Whether ``library`` can use CUDA here (False when it is not installed)."""
    if library not in _NO_CUDA_BUILD:
        raise pytest.UsageError(f"unknown library {library!r} in a gpu/no_cuda marker: expected one of "
                                f"{', '.join(_NO_CUDA_BUILD)}")
    if importlib.util.find_spec(library) is None:
        return False
    if library == "torch":
        import torch

        return torch.cuda.is_available()
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


# ----------------------------------------------------------------------------- torch, whole modules


def _torch_mark_line(path: Path) -> int | None:
    """The line of a test module's module-level ``pytestmark`` naming ``pytest.mark.torch`` (read, not imported)."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None  # importing it reports the problem
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and "pytestmark" in _target_names(node):
            if any(isinstance(n, ast.Attribute) and n.attr == "torch" and isinstance(n.value, ast.Attribute)
                   and n.value.attr == "mark" for n in ast.walk(node.value)):
                return node.lineno
    return None


def _target_names(node: ast.Assign | ast.AnnAssign) -> set[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return {t.id for t in targets if isinstance(t, ast.Name)}


class _SkippedModule(pytest.Module):
    """A test module reported as skipped (at its ``pytestmark`` line) instead of being imported."""

    line = 0

    def collect(self) -> list[pytest.Item]:
        pytest.skip(_NEEDS_TORCH)


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    line = None if _has_torch() else _torch_mark_line(module_path)
    if line is None:
        return None
    module = _SkippedModule.from_parent(parent, path=module_path)
    module.line = line
    return module


def pytest_make_collect_report(collector: pytest.Collector) -> pytest.CollectReport | None:
    if not isinstance(collector, _SkippedModule):
        return None
    where = (str(collector.path), collector.line, f"Skipped: {_NEEDS_TORCH}")
    return pytest.CollectReport(collector.nodeid, "skipped", where, [])


# ----------------------------------------------------------------------------- per test


def _skip_reason(item: pytest.Item) -> str | None:
    if item.get_closest_marker("torch") and not _has_torch():
        return _NEEDS_TORCH
    gpu = list(item.iter_markers("gpu"))
    if gpu and not _cuda_device():
        return _NO_DEVICE
    for library in dict.fromkeys(a for mark in gpu for a in mark.args):
        if not _cuda_build(library):
            installed = importlib.util.find_spec(library) is not None
            return _NO_CUDA_BUILD[library] if installed else f"needs {library} with CUDA: it is not installed"
    for mark in item.iter_markers("no_cuda"):
        for library in mark.args or (None,):
            if _cuda_device() if library is None else _cuda_build(library):
                return f"checks a machine where {library or 'xpuruntime'} cannot use CUDA; this one can"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        reason = _skip_reason(item)
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))
