"""cuBLASLt through nvmath-python, optionally pinned to one algorithm: the ``nvmath`` kernel of ``matmul``.

Registered when this module is imported; it never activates itself. Importing it imports neither torch nor
nvmath. Without params, a call runs the first algorithm of ``nvmath.linalg.advanced.Matmul.plan()`` (cuBLASLt's
own heuristic pick). With params, written by ``xpuruntime tune`` next to the kernel in a policy rule::

    use: [nvmath, default]
    params:
      nvmath:
        algorithm: {id: 66, tile: 18, stages: 20, split_k: 1, reduction_scheme: 0, cta_swizzling: 0,
                    custom_option: 0, inner_shape: 0, cluster_shape: 0}
        layout: [row, col]      # the operands' memory order the algorithm was measured with
        limit: 8                # how many algorithms plan() was asked for when it was measured

the call runs the plan's algorithm whose configuration (nvmath's ``Algorithm`` attributes: ``algorithm_id``,
``tile``, ``stages``, ...) equals ``algorithm``. The configuration is plain data, not a pickle: it is stable
across processes and readable in a diff. A call whose operands are laid out otherwise is skipped by the
dispatcher with a reason (the next kernel of the rule runs); a pinned algorithm that cuBLASLt no longer offers
for the problem (a library or driver changed; ``xpuruntime lock verify`` reports that drift) runs the plan's
first algorithm instead, with a warning, and :func:`executed_algorithms` records ``matched: False``.

Planned problems are cached per shape, strides, dtype, device and alignment; each call rebinds the operands
(``reset_operands``) and runs on torch's current stream. ``a`` is ``(..., M, K)`` (batch dims fold into M),
``b`` is ``(K, N)``; a batched ``b`` is left to other kernels.

>>> import torch, xpuruntime.kernels.nvmath_matmul as nm                                # doctest: +SKIP
>>> a = torch.randn(4096, 768, device="cuda", dtype=torch.bfloat16)                      # doctest: +SKIP
>>> [v["algorithm"]["id"] for v in nm.variants_for(a, a.new_empty(768, 3072))][:3]        # doctest: +SKIP
[66, 66, 21]
"""

from __future__ import annotations

import collections
import json
import threading
import warnings
from collections.abc import Mapping
from typing import Any

from xpuruntime.errors import UnsupportedOperationError
from xpuruntime.kernels.registry import DispatchContext, get_registry

__all__ = ["matmul", "supports", "check_params", "variants", "variants_for", "describe_algorithm",
           "executed_algorithms", "clear_executed_algorithms", "clear_plans", "ALGORITHM_FIELDS", "DEFAULT_LIMIT"]

#: nvmath ``Algorithm`` attribute -> the key it is stored under in policy params
ALGORITHM_FIELDS: dict[str, str] = {
    "algorithm_id": "id", "tile": "tile", "stages": "stages", "split_k": "split_k",
    "reduction_scheme": "reduction_scheme", "cta_swizzling": "cta_swizzling", "custom_option": "custom_option",
    "inner_shape": "inner_shape", "cluster_shape": "cluster_shape",
}
DEFAULT_LIMIT = 8  # what nvmath's MatmulPlanPreferences asks cuBLASLt for by default
_MAX_PLANS = 256
_INSTALL = "pip install nvmath-python (and a CUDA build of torch)"


# -- dispatch checks ---------------------------------------------------------------------------------------
def supports(ctx: DispatchContext) -> str | None:
    """None when the nvmath kernel can run ``ctx``, else why not."""
    if len(ctx.shapes) != 2 or min(len(s) for s in ctx.shapes) < 2:
        return "needs two matrices (a 1-D operand goes to the default kernel)"
    if len(ctx.shapes[1]) > 2:
        return "a batched b (..., K, N): nvmath here multiplies (..., M, K) by a (K, N) matrix"
    if ctx.strides and None in _layouts(ctx):
        return "an operand is neither row- nor column-major (cuBLASLt needs unit stride along one dim)"
    return None


def check_params(ctx: DispatchContext, params: Mapping[str, Any]) -> str | None:
    """None when ``params`` pin an algorithm this call can use, else why not."""
    algorithm = params.get("algorithm")
    if not isinstance(algorithm, Mapping) or not isinstance(algorithm.get("id"), int):
        return "params.algorithm must be a mapping with an integer 'id' (as written by xpuruntime tune)"
    unknown = sorted(set(params) - {"algorithm", "layout", "limit", "rank"})
    if unknown:
        return f"unknown params {', '.join(unknown)} (known: algorithm, layout, limit, rank)"
    limit = params.get("limit", DEFAULT_LIMIT)
    if not isinstance(limit, int) or not 1 <= limit <= 1024:
        return f"params.limit must be an integer 1..1024, got {limit!r}"
    wanted = params.get("layout")
    if wanted is not None and ctx.strides and list(_layouts(ctx)) != list(wanted):
        return (f"the algorithm was tuned for operands laid out {'/'.join(wanted)}; this call's are "
                f"{'/'.join(str(x) for x in _layouts(ctx))}")
    return None


def _layouts(ctx: DispatchContext) -> tuple[str | None, str | None]:
    a_shape, b_shape = ctx.shapes
    a_stride, b_stride = ctx.strides
    return _layout(a_shape, a_stride, fold=True), _layout(b_shape, b_stride)


def _layout(shape: tuple[int, ...], stride: tuple[int, ...], *, fold: bool = False) -> str | None:
    """``row`` or ``col`` (the memory order of the last two dims); None when neither has unit stride."""
    rows, cols = shape[-2], shape[-1]
    if fold and len(shape) > 2 and stride[-1] == 1:
        return "row"  # batch dims fold into rows (a copy when they do not: still row-major)
    if stride[-1] == 1 or cols == 1:
        return "row"
    if stride[-2] == 1 or rows == 1:
        return "col"
    return None


# -- the kernel -----------------------------------------------------------------------------------------------
def matmul(a: Any, b: Any, *, params: Mapping[str, Any] | None = None) -> Any:
    """``a @ b`` through nvmath's cuBLASLt ``Matmul``; ``params`` pin the algorithm (see the module notes)."""
    a2 = a.reshape(-1, a.shape[-1]) if a.dim() > 2 else a
    plan = _plan(a2, b, _limit(params))
    out = plan.run(a2, b, None if not params else params.get("algorithm"), _stream(a2))
    return out.reshape(*a.shape[:-1], b.shape[-1]) if a.dim() > 2 else out


def variants(ctx: DispatchContext) -> list[dict[str, Any]]:
    """The algorithms cuBLASLt offers for ``ctx`` (heuristic order), each as policy params, for a tuner."""
    import torch

    device = torch.device("cuda", torch.cuda.current_device()) if ctx.device == "cuda" else torch.device(ctx.device)
    dtype = _TORCH_DTYPES()[ctx.dtype]
    m, n, k = ctx.dims["m"], ctx.dims["n"], ctx.dims["k"]
    a_col, b_col = ((x == "col") for x in (_layouts(ctx) if ctx.strides else ("row", "row")))
    a = torch.empty(k, m, device=device, dtype=dtype).t() if a_col else torch.empty(m, k, device=device, dtype=dtype)
    b = torch.empty(n, k, device=device, dtype=dtype).t() if b_col else torch.empty(k, n, device=device, dtype=dtype)
    return variants_for(a, b)


def variants_for(a: Any, b: Any, limit: int = DEFAULT_LIMIT) -> list[dict[str, Any]]:
    """Params for each algorithm of the plan for ``a @ b`` (``a`` 2-D), in cuBLASLt's heuristic order."""
    layout = [_layout(tuple(a.shape), tuple(a.stride())), _layout(tuple(b.shape), tuple(b.stride()))]
    plan = _plan(a, b, limit)
    return [{"algorithm": dict(cfg), "layout": layout, "limit": limit, "rank": i} for i, cfg in enumerate(plan.configs)]


def describe_algorithm(algorithm: Any) -> dict[str, Any]:
    """An nvmath ``Algorithm``'s configuration as plain data (attributes this CUDA toolkit lacks are left out)."""
    out: dict[str, Any] = {}
    for attr, key in ALGORITHM_FIELDS.items():
        try:
            value = getattr(algorithm, attr)
        except Exception:  # noqa: BLE001 - not every cuBLASLt version has every attribute
            continue
        out[key] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    try:
        return int(value)  # ints and enum members
    except (TypeError, ValueError):
        return str(value)


# -- what ran ---------------------------------------------------------------------------------------------------
_executed: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)


def executed_algorithms() -> list[dict[str, Any]]:
    """The latest calls (at most 1000): problem, the algorithm nvmath executed (read back from its ``Algorithm``
    object), the pinned one, and whether they are the same.

    >>> nm.executed_algorithms()[-1]      # doctest: +SKIP
    {'m': 8192, 'n': 768, 'k': 768, 'dtype': 'torch.bfloat16', 'algorithm': {'id': 66, ...}, 'pinned': {...},
     'matched': True}
    """
    return list(_executed)


def clear_executed_algorithms() -> None:
    """Forget the recorded calls."""
    _executed.clear()


# -- plans ------------------------------------------------------------------------------------------------------
class _Plan:
    """One planned nvmath ``Matmul`` for a problem: its algorithms, their configurations, a lock for reuse."""

    def __init__(self, a: Any, b: Any, limit: int) -> None:
        from nvmath.linalg.advanced import Matmul

        self.lock = threading.Lock()
        self.mm = Matmul(a, b, stream=_stream(a))
        self.algorithms = tuple(self.mm.plan(preferences={"limit": limit}, stream=_stream(a)))
        self.configs = tuple(describe_algorithm(x) for x in self.algorithms)
        self.problem = {"m": int(a.shape[0]), "n": int(b.shape[1]), "k": int(a.shape[1]), "dtype": str(a.dtype)}
        self._pinned: dict[str, int | None] = {}

    def index_of(self, pinned: Mapping[str, Any]) -> int | None:
        key = json.dumps(pinned, sort_keys=True, default=str)
        if key not in self._pinned:
            self._pinned[key] = next((i for i, cfg in enumerate(self.configs) if _same(cfg, pinned)), None)
            if self._pinned[key] is None:
                warnings.warn(f"nvmath matmul {self.problem}: the pinned cuBLASLt algorithm {dict(pinned)} is not among "
                              f"the {len(self.configs)} algorithms cuBLASLt offers here; running its first choice "
                              "(check `xpuruntime lock verify` for drift, or tune again)", RuntimeWarning, stacklevel=5)
        return self._pinned[key]

    def run(self, a: Any, b: Any, pinned: Mapping[str, Any] | None, stream: Any) -> Any:
        index = None if pinned is None else self.index_of(pinned)
        algorithm = self.algorithms[index if index is not None else 0]
        with self.lock:
            self.mm.reset_operands(a=a, b=b, stream=stream)
            out = self.mm.execute(algorithm=algorithm, stream=stream)
        _executed.append({**self.problem, "algorithm": self.configs[index if index is not None else 0],
                          "pinned": None if pinned is None else dict(pinned),
                          "matched": None if pinned is None else index is not None})
        return out


def _same(config: Mapping[str, Any], pinned: Mapping[str, Any]) -> bool:
    """Every attribute both sides know agrees (a toolkit without an attribute leaves it out)."""
    shared = set(config) & set(pinned)
    return "id" in shared and all(config[k] == pinned[k] for k in shared)


_plans: collections.OrderedDict[tuple[Any, ...], _Plan] = collections.OrderedDict()
_plans_lock = threading.Lock()


def _plan(a: Any, b: Any, limit: int) -> _Plan:
    key = (str(a.device), str(a.dtype), tuple(a.shape), tuple(a.stride()), tuple(b.shape), tuple(b.stride()),
           _alignment(a), _alignment(b), limit)
    with _plans_lock:
        plan = _plans.get(key)
        if plan is not None:
            _plans.move_to_end(key)
            return plan
    plan = _new_plan(a, b, limit)
    with _plans_lock:
        _plans[key] = plan
        while len(_plans) > _MAX_PLANS:
            _plans.popitem(last=False)[1].mm.free()
    return plan


def clear_plans() -> None:
    """Free every cached plan (its workspace, and its reference to the last operands)."""
    with _plans_lock:
        plans = list(_plans.values())
        _plans.clear()
    for plan in plans:
        plan.mm.free()


def _new_plan(a: Any, b: Any, limit: int) -> _Plan:
    try:
        return _Plan(a, b, limit)
    except ImportError:
        raise UnsupportedOperationError("the nvmath matmul needs nvmath-python", expected="nvmath importable",
                                        received="not installed", hint=_INSTALL) from None
    except (RuntimeError, ValueError, TypeError) as exc:
        raise UnsupportedOperationError(f"nvmath could not plan this matmul: {exc}",
                                        expected="a problem cuBLASLt supports",
                                        received=f"{tuple(a.shape)} @ {tuple(b.shape)} {a.dtype}",
                                        hint="use another matmul kernel for this shape") from None


def _alignment(t: Any) -> int:
    ptr = int(t.data_ptr())
    return 256 if ptr % 256 == 0 else ptr & -ptr


def _limit(params: Mapping[str, Any] | None) -> int:
    return int(params.get("limit", DEFAULT_LIMIT)) if params else DEFAULT_LIMIT


def _stream(t: Any) -> Any:
    if t.device.type != "cuda":
        return None
    import torch

    return torch.cuda.current_stream(t.device)


def _TORCH_DTYPES() -> dict[str, Any]:  # noqa: N802
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


get_registry().register(
    "matmul", "nvmath", forward="xpuruntime.kernels.nvmath_matmul:matmul", devices=("cuda",),
    dtypes=("fp16", "bf16", "fp32"), requires=("torch", "nvmath"), supports=supports, check_params=check_params,
    variants=variants, install_hint=_INSTALL,
    description="cuBLASLt through nvmath-python; params pin the cuBLASLt algorithm (xpuruntime tune writes them)")
