"""Host I/O of torch's captured CUDA graphs with fewer waits (issue 13, ``engines/_torch_staging.py``): small numpy
feeds packed into one transfer, small results read back through page-locked buffers with one wait. Each case mixes
small tensors (staged) with one over the 1 MiB limit (copied as a hand loop copies it), feeds new values every call,
and checks every result against a CPU reference and that earlier results are never overwritten. Run on a machine
with an NVIDIA GPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import xpuruntime as xrt

BIG = 300_000  # float32 elements: 1.2 MB, over the staging limit


def _feeds(seed: int, rows: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {k: rng.integers(0, 100, size=(rows, 16)).astype(np.int64) for k in ("a", "b", "c")}
    out["x"] = rng.standard_normal(BIG).astype(np.float32)
    return out


def _module(big: bool) -> Any:
    import torch

    class Mixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(100, 8)

        def forward(self, a: Any, b: Any, c: Any, x: Any) -> Any:
            h = self.emb(a) + 2 * self.emb(b) + 3 * self.emb(c)
            return (h, x * 2 + 1) if big else (h, h.sum(-1))

    torch.manual_seed(0)
    return Mixed().eval()


def _reference(module: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        out = module(*[torch.from_numpy(feeds[k]) for k in ("a", "b", "c", "x")])
    return [t.numpy() for t in out]


def _check_calls(call: Any, module: Any, rows: list[int]) -> None:
    kept = []
    for seed, n in enumerate(rows):
        feeds = _feeds(seed, n)
        got = call(feeds)
        want = _reference(module, feeds)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
        kept.append(([g.copy() for g in got], got))
    for copies, got in kept:  # no result is a view of a buffer a later call wrote
        for c, g in zip(copies, got):
            np.testing.assert_array_equal(c, g)


@pytest.mark.torch
@pytest.mark.gpu("torch")
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("staged", [True, False])
def test_torch_graph_packs_small_inputs_and_reads_small_outputs_with_one_wait(
        big: bool, staged: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Staged (the default) and with XPURUNTIME_STAGED_IO=0 (every tensor copied as a hand loop copies it): the same
    results either way."""
    import torch

    monkeypatch.setenv("XPURUNTIME_STAGED_IO", "1" if staged else "0")

    module = _module(big)
    example = tuple(torch.from_numpy(v) for v in _feeds(0).values())
    sess = xrt.InferenceSession(module, engine="torch", device="cuda",
                                exec_policy={"cuda_graphs": True, "static_shape": True, "fallback": "error"},
                                engine_options={"example_inputs": example, "copy": True})
    names = [i.name for i in sess.input_info]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return list(sess.run(dict(zip(names, feeds.values()))).values())

    _check_calls(run, module, [2] * 5)
    eng = sess.engine
    statics = eng._graph.static_args
    storages = {t.untyped_storage().data_ptr() for t in statics[:3]}
    if staged:
        assert eng._packed is not None and len(storages) == 1  # the three id inputs: views of one buffer
        assert statics[3].untyped_storage().data_ptr() not in storages  # the 1.2 MB input: a buffer of its own
    else:
        assert eng._packed is None and len(storages) == 3  # each static input a buffer of its own
    prepared = sess.prepare(dict(zip(names, _feeds(0).values())))
    _check_calls(lambda f: list(prepared(dict(zip(names, f.values()))).values()), module, [2] * 4)
