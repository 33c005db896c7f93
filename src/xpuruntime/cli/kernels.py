"""CLI commands for kernels and tuning: ``kernels``, ``tune`` and ``lock verify|hash``.

    $ xpuruntime kernels --json
    $ xpuruntime tune --shapes matmul:bf16:8192x768x768,matmul:bf16:8192x3072x768 --device cuda -o tuned.yaml
    $ xpuruntime tune model.onnx --dim batch=8 --dim seq=1024 --device cuda -o tuned.yaml
    $ xpuruntime tune --entry mypkg.train:one_step -o tuned.yaml
    $ xpuruntime tune model.onnx --search --dim batch=1 --dim seq=128 -o fast.yaml
    $ xpuruntime lock verify tuned.lock.json
    $ xpuruntime lock hash tuned.lock.json

``tune`` writes the tuned policy (per-shape rules, params included) and, next to it, a lock
(``NAME.lock.json``: the policy, the untuned one, the fingerprint, the records, ONNX Runtime's TunableOp
results, hashes). ``lock verify`` exits 0 when this machine matches the lock's fingerprint, 1 when a field that
tuning depends on drifted (each listed) or the lock is invalid; 2 on a usage error.

With ``--entry``, the whole step is then timed under the base and the tuned policy (interleaved, this process):
only the ops whose rules do not make it slower are kept, and when the tuned step is slower the base policy is
written; the figures and the reason are the lock's ``end_to_end`` section (``--no-check`` skips this).

``tune MODEL --search`` searches policies instead of kernels (:mod:`xpuruntime.inference.search`): engine x
precision x CUDA graphs x compile x fusions under the accuracy contract, timed with ``bench``; it writes the
fastest policy that meets the contract and a lock whose ``search`` section holds every candidate's figures and
why each was dropped.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import time
import warnings
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from xpuruntime.cli._common import check_output
from xpuruntime.errors import InputError, safe_text, short_repr

__all__ = ["ORDER", "register", "load_entry"]

ORDER = 50  #: place in ``xpuruntime --help`` (see xpuruntime.cli)

_Json = Annotated[bool, typer.Option("--json", help="Print plain JSON on stdout instead of tables.")]
_LockFile = Annotated[Path, typer.Argument(help="A lock file written by `xpuruntime tune`.", metavar="LOCK",
                                           show_default=False)]


class Strategy(str, Enum):
    best_performance = "best_performance"
    first_supported = "first_supported"


class Bucket(str, Enum):
    exact = "exact"
    pow2 = "pow2"


class Fallback(str, Enum):
    error = "error"
    warn = "warn"
    allow = "allow"


# ============================================================================================== kernels
def _kernels(as_json: bool) -> None:
    from xpuruntime.cli import print_json, stdout_console
    from xpuruntime.kernels import get_registry
    from xpuruntime.runtime.devices import get_device_count

    cuda = get_device_count("cuda") > 0
    described = get_registry().describe()
    for kernels in described.values():
        for k in kernels:
            if k["available"] and k["devices"] == ["cuda"] and not cuda:
                k["available"], k["reason"] = False, "no CUDA device here"
    if as_json:
        return print_json(described)
    table = Table("op", "kernel", "devices", "dtypes", "default", "params", "available", show_edge=False)
    for op, kernels in described.items():
        for k in kernels:
            table.add_row(op, k["name"], _join(k["devices"]), _join(k["dtypes"]), "yes" if k["default"] else "",
                          "tunable" if k["tunable"] else ("yes" if k["params"] else ""),
                          Text("yes" if k["available"] else f"no: {k['reason']}",
                               style="" if k["available"] else "dim"))
    stdout_console().print(table)


def _join(value: Any) -> str:
    return value if isinstance(value, str) else ", ".join(value)


# ============================================================================================== tune
def load_entry(spec: str) -> Callable[[], Any]:
    """``"pkg.mod:fn"`` or ``"path/to/file.py:fn"`` -> the function.

    A file is imported under a private module name (``./torch.py`` never becomes ``torch``); for a module name the
    current folder is searched after everything else on ``sys.path`` (a ``torch.py`` there never shadows torch).

    >>> load_entry("train.py:one_step")   # doctest: +SKIP
    <function one_step at 0x...>
    """
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr.isidentifier() or attr.startswith("__"):
        raise InputError("malformed --entry", expected="MODULE:FUNCTION or FILE.py:FUNCTION (a public function)",
                         received=safe_text(repr(spec)))
    try:
        module = _import(module_name)
    except ImportError as exc:
        raise InputError(f"cannot import {safe_text(repr(module_name))}: {safe_text(str(exc))}",
                         expected="an importable module or a .py file", received=safe_text(module_name),
                         hint="run from the folder that holds it, or set PYTHONPATH") from None
    fn = getattr(module, attr, None)
    if not callable(fn) or isinstance(fn, type):
        raise InputError(f"{safe_text(module_name)} has no function {attr!r}",
                         expected="a function taking no arguments", received=safe_text(short_repr(fn)))
    return fn


def _import(name: str) -> Any:
    if name.endswith(".py"):
        path = Path(name).resolve()
        if not path.is_file():
            raise ImportError(f"no file {path}")
        private = "_xpuruntime_entry_" + hashlib.sha256(os.fsencode(path)).hexdigest()[:16]
        spec = importlib.util.spec_from_file_location(private, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[private] = module  # dataclasses and pickling look the module up by name
        spec.loader.exec_module(module)
        return module
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # last: installed packages win over files of the same name here
    return importlib.import_module(name)


def _call_entry(spec: str, fn: Callable[[], Any]) -> None:
    try:
        fn()
    except Exception as exc:  # the user's code: its error, named, without our frames
        raise InputError(f"--entry {safe_text(spec)} raised {type(exc).__name__}: {safe_text(short_repr(str(exc)))}",
                         expected="a function that runs without arguments", received=safe_text(spec),
                         hint="run it directly (python -c 'import ...; f()') to see its traceback") from None


def _tune_targets_checked(output: Path, lock: Path) -> None:
    """Before any tuning: both targets writable files, and not the same file."""
    check_output(output, "--output")
    check_output(lock, "--lock")
    if os.path.abspath(output) == os.path.abspath(lock) or (
            output.exists() and lock.exists() and os.path.samefile(output, lock)):
        raise InputError("--output and --lock name the same file", expected="two different files",
                         received=safe_text(str(output)), hint="drop --lock (default: OUTPUT-STEM.lock.json)")


def _parse_pairs(items: list[str], what: str, example: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise InputError(f"malformed {what}", expected=example, received=repr(item))
        out[key.strip()] = value.strip()
    return out


def _dims(items: list[str]) -> dict[str, int]:
    pairs = _parse_pairs(items, "--dim", "NAME=INT, e.g. batch=8")
    bad = [k for k, v in pairs.items() if not v.isdigit()]
    if bad:
        raise InputError("malformed --dim", expected="NAME=INT", received=f"{bad[0]}={pairs[bad[0]]}")
    return {k: int(v) for k, v in pairs.items()}


def _kernel_lists(items: list[str]) -> dict[str, list[str]]:
    pairs = _parse_pairs(items, "--kernels", "OP=K1,K2, e.g. matmul=cublas,cublaslt,nvmath")
    return {op: [k.strip() for k in ks.split(",") if k.strip()] for op, ks in pairs.items()}


def _targets(model: Path | None, entry: str | None, shapes: list[str], device: str, dims: dict[str, int],
             dtype: str | None, notes: list[str]) -> list[Any]:
    from xpuruntime.kernels import tuner

    targets: list[Any] = []
    if model is not None:
        found, skipped = tuner.targets_from_onnx(model, dims=dims, device=device, dtype=dtype)
        targets += found
        notes += skipped
    if entry is not None:
        fn = load_entry(entry)
        with tuner.recording() as rec:
            _call_entry(entry, fn)
        targets += rec.targets
        if not rec.targets:
            notes.append(f"{entry} made no matmul, attention or layernorm call")
    targets += tuner.targets_from_specs(shapes, device)
    return tuner._unique(targets)


def _end_to_end(entry: str, base: Any, tuned: Any, warmup: int | None,
                repeats: int | None) -> tuple[Any, dict[str, Any]]:
    """The whole step under the base and the tuned policy, interleaved: the policy to write and the figures."""
    from xpuruntime.pytorch import check_end_to_end

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = check_end_to_end(load_entry(entry), base, tuned, warmup=2 if warmup is None else min(warmup, 3),
                                   repeats=5 if repeats is None else min(repeats, 20))
    return outcome.policy, outcome.data


def _progress_tune(tuner: Any, targets: list[Any]) -> list[Any]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    columns = (TextColumn("[bold]tuning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.description}"))
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(targets[0].describe() if targets else "", total=len(targets))

        def advance(target: Any, record: Any) -> None:
            nxt = targets.index(target) + 1
            progress.update(task, advance=1, description=targets[nxt].describe() if nxt < len(targets) else "done")

        return tuner.tune(targets, progress=advance)


def _record_row(record: Any) -> dict[str, Any]:
    tried = [c for c in record.candidates if c.status == "ok"]
    return {"op": record.op, "dtype": record.dtype, "device": record.device, "dims": dict(record.dims),
            "kernel": record.kernel, "params": dict(record.params) if record.params else None,
            "time_ms": record.time_ms, "default_time_ms": record.default_time_ms, "speedup": record.speedup,
            "candidates": len(record.candidates), "measured": len(tried)}


def _print_summary(rows: list[dict[str, Any]], written: dict[str, str], seconds: float, notes: list[str]) -> None:
    from xpuruntime.cli import stdout_console

    table = Table("op", "dtype", "dims", "kernel", "ms", "default ms", "speed-up", "measured", show_edge=False)
    for r in rows:
        kernel = r["kernel"] + (f"#{r['params'].get('rank')}" if r["params"] and "rank" in r["params"] else "")
        table.add_row(r["op"], r["dtype"], "x".join(str(v) for v in r["dims"].values()), kernel, _ms(r["time_ms"]),
                      _ms(r["default_time_ms"]), "-" if r["speedup"] is None else f"{r['speedup']:.2f}x",
                      f"{r['measured']}/{r['candidates']}")
    console = stdout_console()
    console.print(table)
    for note in notes:
        console.print(Text(f"note: {note}", style="dim"), soft_wrap=True)
    console.print(Text(f"tuned {len(rows)} shape(s) in {seconds:.1f} s; wrote " +
                       ", ".join(f"{k} {v}" for k, v in written.items())), soft_wrap=True)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _tune(model: Path | None, entry: str | None, shapes: list[str], device: str, strategy: Strategy,
          kernels: list[str], policy: Path | None, output: Path, lock: Path | None, warmup: int | None,
          repeats: int | None, dims: list[str], dtype: str | None, bucket: Bucket, ort: bool | None,
          as_json: bool, search: dict[str, Any] | None = None, check: bool = True) -> None:
    from xpuruntime.cli import print_json
    from xpuruntime.inference.engine import get_engine_class
    from xpuruntime.kernels.tuner import Tuner, build_policy, with_tunable_op
    from xpuruntime.policies import Policy
    from xpuruntime.policies.lock import Lock
    from xpuruntime.policies.vocabulary import DEFAULT_ENGINE

    if search is not None and (model is None or entry is not None or shapes):
        raise typer.BadParameter("--search needs a MODEL (an .onnx file), without --entry or --shapes",
                                 param_hint="MODEL")
    if model is None and entry is None and not shapes:
        raise typer.BadParameter("give a MODEL, --entry or --shapes (at least one)", param_hint="MODEL")
    check_output(output, "--output")  # before deriving the lock's name from it
    lock = lock or output.with_name(output.stem + ".lock.json")
    if output.suffix.lower() not in (".yaml", ".yml", ".json") or lock.suffix.lower() != ".json":
        raise InputError("unsupported output file names", expected="--output *.yaml|*.yml|*.json and --lock *.json",
                         received=safe_text(f"{output} and {lock}"))
    _tune_targets_checked(output, lock)
    if search is not None:
        return _search(model, device, policy, output, lock, warmup, repeats, dims, **search, as_json=as_json)
    base = Policy.load(policy) if policy else Policy()
    notes: list[str] = []
    start = time.perf_counter()
    dim_values = _dims(dims)
    targets = _targets(model, entry, shapes, device, dim_values, dtype, notes)
    tuner = Tuner(strategy=strategy.value, warmup=warmup, repeats=repeats, kernels=_kernel_lists(kernels),
                  policy=base, bucket=bucket.value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a candidate's own warnings: its outcome is in the record
        records = _progress_tune(tuner, targets) if targets else []
    engine_tuning = {}
    if model is not None and (ort if ort is not None else True):  # the engine's own tuner (ORT: TunableOp)
        engine_cls = get_engine_class(DEFAULT_ENGINE)
        captured = engine_cls.capture_tuning(model, device=device, policy=base, dims=dim_values)
        if captured is not None:
            engine_tuning[engine_cls.name] = captured
    tuned = build_policy(records, with_tunable_op(base) if engine_tuning else base)
    end_to_end = None
    if entry is not None and check and records:
        tuned, end_to_end = _end_to_end(entry, base, tuned, warmup, repeats)
        notes.append(f"end-to-end: {end_to_end['why']}")
    tuned.save(output)
    the_lock = Lock.create(tuned, records, base_policy=base, engine_tuning=engine_tuning, end_to_end=end_to_end)
    the_lock.save(lock)
    seconds = time.perf_counter() - start
    rows = [_record_row(r) for r in records]
    if as_json:
        return print_json({"policy": str(output), "lock": str(lock), "policy_hash": tuned.hash,
                           "lock_hash": the_lock.hash, "seconds": seconds, "records": rows, "notes": notes,
                           "end_to_end": end_to_end,
                           "onnxruntime_tuning_results": len(engine_tuning.get("onnxruntime", []))})
    _print_summary(rows, {"policy": str(output), "lock": str(lock)}, seconds, notes)


def _search(model: Path, device: str, policy: Path | None, output: Path, lock: Path, warmup: int | None,
            repeats: int | None, dims: list[str], engines: list[str], precisions: list[str], rtol: float | None,
            atol: float | None, as_json: bool) -> None:
    from xpuruntime.cli import print_json
    from xpuruntime.inference.search import accuracy_contract, search
    from xpuruntime.policies import Policy
    from xpuruntime.policies.lock import Lock

    base = Policy.load(policy) if policy else Policy()
    contract = None
    if rtol is not None or atol is not None:
        default_rtol, default_atol = accuracy_contract(base)
        contract = (default_rtol if rtol is None else rtol, default_atol if atol is None else atol)
    start = time.perf_counter()
    result = search(model, engines=engines or None, device=device, policy=base, precisions=precisions or None,
                    dims=_dims(dims), accuracy=contract, warmup=5 if warmup is None else warmup,
                    repeat=20 if repeats is None else repeats)
    chosen = result.policy
    chosen.save(output)
    the_lock = Lock.create(chosen, base_policy=base, search=result.to_data())
    the_lock.save(lock)
    summary = {"policy": str(output), "lock": str(lock), "policy_hash": chosen.hash, "lock_hash": the_lock.hash,
               "seconds": time.perf_counter() - start, "chosen": result.to_data()["chosen"],
               "engine": result.to_data()["engine"], "candidates": [c.to_dict() for c in result.candidates]}
    if as_json:
        return print_json(summary)
    _print_search(result, summary)


def _print_search(result: Any, summary: dict[str, Any]) -> None:
    from xpuruntime.cli import stdout_console

    console = stdout_console()
    console.print(result.table())
    if result.chosen is None:
        console.print(Text("no candidate met the accuracy contract and the policy: wrote the base policy"),
                      soft_wrap=True)
    else:
        console.print(Text(f"fastest: {result.chosen.label} (use engine={result.chosen.engine!r} with the policy)"),
                      soft_wrap=True)
    console.print(Text(f"searched {len(result.candidates)} candidate(s) in {summary['seconds']:.1f} s; wrote policy "
                       f"{summary['policy']}, lock {summary['lock']}"), soft_wrap=True)


# ============================================================================================== lock
_DECISION = {"error": "loading refuses this lock (LockDriftError)",
             "warn": "loading warns and uses the untuned policy", "allow": "loading uses the tuned policy anyway"}


def _verify(file: Path, fallback: Fallback | None, as_json: bool) -> None:
    from xpuruntime.cli import print_json, stdout_console
    from xpuruntime.policies.lock import Lock, drift_rule

    lock = Lock.load(file, check=False)
    drift = lock.drift()
    rule = drift_rule(fallback.value if fallback else None)  # the caller's rule, never the lock's own
    if as_json:
        print_json({"file": str(file), "hash": lock.hash, "policy_hash": lock.tuned_policy.hash,
                    "records": len(lock.records), "fallback": rule,
                    "decision": _DECISION[rule] if drift else "the tuned policy applies", **drift.to_dict()})
    else:
        console = stdout_console()
        if drift:
            table = Table("field", "locked", "here", show_edge=False)
            for c in drift.changes:
                table.add_row(*(Text(safe_text(x)) for x in (c.path, _text(c.old), _text(c.new))))
            console.print(Text(f"{file}: drift in {len(drift.changes)} field(s) since tuning"), soft_wrap=True)
            console.print(table)
            console.print(Text(f"fallback={rule}: {_DECISION[rule]}"), soft_wrap=True)
        else:
            console.print(Text(f"{file}: no drift (fingerprint {drift.here[:12]}, lock {lock.hash[:12]}, "
                               f"{len(lock.records)} records)"), soft_wrap=True)
        for c in drift.notes:
            console.print(Text(f"note: {c} (not a tuning input)", style="dim"), soft_wrap=True)
    if drift:
        raise typer.Exit(1)


def _text(value: Any) -> str:
    return "-" if value is None else str(value)


# ============================================================================================== registration
def register(app: typer.Typer) -> None:
    """Add ``kernels``, ``tune`` and the ``lock`` group to the root app."""
    from xpuruntime.cli._common import SETTINGS, Group

    @app.command("kernels")
    def kernels_cmd(as_json: _Json = False) -> None:
        """List the kernel registry: ops, kernels, devices, dtypes, params, and why a kernel is unavailable."""
        _kernels(as_json)

    @app.command("tune")
    def tune_cmd(
        model: Annotated[Optional[Path], typer.Argument(help="An .onnx model: tune its MatMul/Gemm shapes.",
                                                        show_default=False)] = None,
        entry: Annotated[Optional[str], typer.Option(
            "--entry", help="MODULE:FUNCTION (or FILE.py:FUNCTION) to run while recording its calls.")] = None,
        shapes: Annotated[Optional[list[str]], typer.Option(
            "--shapes", "-s", help="op:dtype:dims, e.g. matmul:bf16:1024x768x768 (m x n x k); comma-separated or "
                                   "repeated.")] = None,
        device: Annotated[str, typer.Option("--device", "-d", help="cpu or cuda (for MODEL and --shapes).")] = "cpu",
        strategy: Annotated[Strategy, typer.Option("--strategy", help="How to pick per shape.")] =
        Strategy.best_performance,
        kernels: Annotated[Optional[list[str]], typer.Option(
            "--kernels", "-k", help="OP=K1,K2: the candidates for an op (default: the policy's list, else all "
                                    "registered).")] = None,
        policy: Annotated[Optional[Path], typer.Option("--policy", "-p", help="Base policy to tune.")] = None,
        output: Annotated[Path, typer.Option("--output", "-o", help="Tuned policy file to write.")] =
        Path("tuned-policy.yaml"),
        lock: Annotated[Optional[Path], typer.Option("--lock", help="Lock file to write (default: "
                                                                    "OUTPUT-STEM.lock.json).")] = None,
        warmup: Annotated[Optional[int], typer.Option("--warmup", min=0, help="Warm-up calls per candidate.")] = None,
        repeats: Annotated[Optional[int], typer.Option("--repeats", min=1, help="Timed calls per candidate.")] = None,
        dim: Annotated[Optional[list[str]], typer.Option("--dim", help="NAME=INT for a symbolic model dim.")] = None,
        dtype: Annotated[Optional[str], typer.Option("--dtype", help="Tune MODEL's shapes in this dtype.")] = None,
        bucket: Annotated[Bucket, typer.Option("--bucket", help="Rules per exact m, or per power-of-two range.")] =
        Bucket.exact,
        ort: Annotated[Optional[bool], typer.Option("--ort/--no-ort", help="Capture ONNX Runtime's TunableOp "
                                                                           "results for MODEL (default: on).")] = None,
        search: Annotated[bool, typer.Option("--search", help="Search policies for MODEL (engine x precision x "
                                             "graphs x compile x fusions) instead of kernels.")] = False,
        engine: Annotated[Optional[list[str]], typer.Option(
            "--engine", "-e", help="--search: an engine to try (repeat; default: the installed ONNX engines).")] = None,
        precision: Annotated[Optional[list[str]], typer.Option(
            "--precision", help="--search: a precision to try (repeat; default: fp32, tf32 on CUDA, fp16, bf16, "
                                "int8).")] = None,
        rtol: Annotated[Optional[float], typer.Option("--rtol", min=0.0, help="--search: relative tolerance "
                                                      "(default: the policy's execution.accuracy, else 1e-2).")] = None,
        atol: Annotated[Optional[float], typer.Option("--atol", min=0.0, help="--search: absolute tolerance "
                                                      "(default: the policy's execution.accuracy, else 1e-3).")] = None,
        check: Annotated[bool, typer.Option("--check/--no-check", help="--entry: time the whole step with the base "
                                            "and the tuned policy and keep only rules that do not slow it.")] = True,
        as_json: _Json = False,
    ) -> None:
        """Measure the registered kernels on real shapes; write a policy with per-shape rules and a lock.

        Shapes come from an ONNX model (shape inference), a Python entry point run under the recorder, or
        --shapes. On a GPU candidates are timed with CUDA events, on the CPU with perf_counter. With --search,
        policies are searched instead: the fastest that meets the accuracy contract is written.
        """
        options = {"engines": engine or [], "precisions": precision or [], "rtol": rtol, "atol": atol}
        _tune(model, entry, shapes or [], device, strategy, kernels or [], policy, output, lock, warmup, repeats,
              dim or [], dtype, bucket, ort, as_json, search=options if search else None, check=check)

    lock_app = typer.Typer(cls=Group, name="lock", no_args_is_help=True, context_settings=SETTINGS,
                           help="Check lock files (tuned policy + fingerprint + records) against this machine.")
    app.add_typer(lock_app, name="lock")

    @lock_app.command("verify")
    def lock_verify(file: _LockFile, fallback: Annotated[Optional[Fallback], typer.Option(
            "--fallback", help="Judge drift by this rule (default: xpuruntime's drift rule, "
                               "xpuruntime.policies.lock.drift_rule(); never the lock's own).")] = None,
            as_json: _Json = False) -> None:
        """Compare a lock's fingerprint with this machine, field by field.

        Exit status: 0 no drift; 1 drift in a field tuning depends on (GPU, driver, CUDA, cuDNN, kernel
        libraries), or an invalid or edited lock; 2 usage error.
        """
        _verify(file, fallback, as_json)

    @lock_app.command("hash")
    def lock_hash(file: _LockFile, policy_only: Annotated[bool, typer.Option(
            "--policy", help="Print the tuned policy's hash instead of the lock's.")] = False) -> None:
        """Print the lock's content hash (ranks and machines compare it), or its policy's with --policy."""
        from xpuruntime.policies.lock import Lock

        lock = Lock.load(file, check=False)
        typer.echo(lock.tuned_policy.hash if policy_only else lock.hash)
