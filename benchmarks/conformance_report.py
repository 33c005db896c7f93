"""Run the conformance matrix and write CONFORMANCE.md (one row per cell) and conformance.json.

CPU engines (onnxruntime, openvino, torch) always; onnxruntime's CUDA provider and torch on CUDA when a CUDA
device is present. Each row: what the receipts said (construction, explain), the table's truth, the verdict
(ok / FALSE PASS / FALSE ALARM / ERROR / known bug), finiteness and relative error against float32.

    PYTHONPATH=src python benchmarks/conformance_report.py [--models bert,resnet50] [--out CONFORMANCE.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "conformance"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import cells
from _common import write_json
from expectations import MODELS, expected


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("onnxruntime", "openvino", "torch", "transformers", "onnx", "numpy"):
        try:
            found[name] = str(__import__(name).__version__)
        except Exception:  # not installed, or no version attribute: the row says so
            found[name] = "not installed"
    return found


def _device() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return f"{platform.machine()} CPU + {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{platform.machine()} CPU, {os.cpu_count()} cores"


def _verdict(got: cells.Outcome, model: str, engine: str, precision: str, shapes: str, device: str) -> str:
    if device != "cpu":
        return "(no GPU table yet)" if got.error is None else "ERROR"
    want = expected(model, engine, precision, shapes)
    if got.error:
        return "known bug" if want.bug else "ERROR"
    false_alarm = not got.said_construction <= want.kinds or (got.said_explain or frozenset()) - want.kinds
    false_pass = (want.kinds and got.construction_honored) or want.kinds - (got.said_explain or frozenset())
    silent = got.finite is False and got.reference_finite and "accuracy" not in want.kinds
    words = [w for w, bad in (("FALSE ALARM", false_alarm), ("FALSE PASS", false_pass), ("NON-FINITE", silent)) if bad]
    return (" + ".join(words) + (" (known bug)" if want.bug else "")) if words else "ok"


def _installed(engine: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(engine) is not None


def _cells(models: list[str], cuda: bool) -> list[tuple[str, str, str, str, str]]:
    engines = [e for e in cells.ENGINES if _installed(e)]  # the GPU machine has no openvino
    out = [(m, e, p, s, "cpu") for m in models for e in engines for p in cells.PRECISIONS
           for s in cells.shape_modes(e)]
    if cuda:
        out += [(m, e, p, s, "cuda") for m in models for e in cells.GPU_ENGINES for p in cells.PRECISIONS
                for s in cells.shape_modes(e)]
    return out


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _row(cell: tuple[str, ...], got: cells.Outcome, verdict: str) -> str:
    model, engine, precision, shapes, device = cell
    truth = "" if device != "cpu" else (", ".join(sorted(expected(*cell[:4]).kinds)) or "honoured")
    said = lambda kinds: "-" if kinds is None else (", ".join(sorted(kinds)) or "honoured")
    err = "" if got.rel_err is None else f"{got.rel_err:.1e}"
    prec = " ".join(f"{k}:{v}" for k, v in sorted(got.compute_precisions.items()))
    note = (got.error or "")[:80].replace("|", "/")
    return (f"| {model} | {engine} | {device} | {precision} | {shapes} | {said(got.said_construction)} | "
            f"{said(got.said_explain)} | {truth} | {verdict} | {got.finite} | {err} | {prec} | {note} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default="CONFORMANCE.md")
    parser.add_argument("--json", default="benchmarks/results/conformance.json")
    parser.add_argument("--no-cuda", action="store_true")
    args = parser.parse_args()
    models = args.models.split(",")
    cache = Path(tempfile.gettempdir()) / "xpuruntime-conformance-corpus"
    todo = _cells(models, _cuda_available() and not args.no_cuda)
    rows, records, refs = [], {}, {}
    for cell in todo:
        model = cell[0]
        refs.setdefault(model, cells.reference(model, cache))
        got = cells.run_cell(*cell[:4], cache_dir=cache, device=cell[4], ref=refs[model])
        verdict = _verdict(got, *cell)
        rows.append(_row(cell, got, verdict))
        records["|".join(cell)] = {**got.row(), "verdict": verdict}
        print(rows[-1], flush=True)
    _write(Path(args.out), rows, records)
    write_json(Path(args.json), {"versions": _versions(), "device": _device(), "cells": records})


def _write(path: Path, rows: list[str], records: dict[str, dict]) -> None:
    from xpuruntime._io import atomic_write_bytes

    verdicts: dict[str, int] = {}
    for rec in records.values():
        verdicts[rec["verdict"]] = verdicts.get(rec["verdict"], 0) + 1
    head = [
        "# Conformance matrix", "",
        f"Generated {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by "
        "`benchmarks/conformance_report.py` on " + _device() + ".", "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()) + ".", "",
        ("Corpus: `xpuruntime.corpus` (size tiny, seeded random weights); every cell under `fallback: error`. "
        "*construction* and *explain* are the violation kinds in xpuruntime's receipts; *truth* is the "
        "expectations table (`tests/conformance/expectations.py`); *rel err* is max |out - fp32 ref| / max |ref|; "
        "*compute* counts MatMul/Conv-like nodes by the precision the profile shows."), "",
        "Verdicts: " + ", ".join(f"{k}: {v}" for k, v in sorted(verdicts.items())) + ".", "",
        ("| model | engine | device | precision | shapes | construction | explain | truth | verdict | finite | "
        "rel err | compute | error |"),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    atomic_write_bytes(path, ("\n".join(head + rows) + "\n").encode())


if __name__ == "__main__":
    main()
