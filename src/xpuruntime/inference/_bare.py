"""Bare engines for :func:`xpuruntime.inference.bench.bench`'s baseline: each engine's own API, configured by hand
the way an xpuruntime engine was (same model copy, same settings), with none of xpuruntime's checks.

Two kinds. :func:`onnxruntime`, :func:`torch` and :func:`openvino` build a **separate** instance (a second
``InferenceSession``, a second cast and compiled module, a second compiled model). :func:`same_instance` drives
**the xpuruntime engine's own instance** (its ``InferenceSession`` and CUDA-graph binding, its cast, compiled or
captured module, its compiled OpenVINO model) from a hand-written loop: the difference is xpuruntime's Python
alone, without the few percent two instances of one engine differ by (where their memory and objects landed).
Both kinds run the loop each engine's documentation shows: ONNX Runtime's CUDA-graph recipe (``update_inplace`` per
input, ``numpy()`` per output); torch's ``static.copy_`` per input and ``.cpu()`` per output, which is one wait per
tensor where xpuruntime's own replay of a captured graph sends and reads small tensors with one wait in all
(``engines/_torch_staging.py``).

Each maker takes a loaded xpuruntime engine and returns ``(make, notes)``; ``make(feeds, io)`` returns the
zero-argument call that is timed. A same-instance ``make`` is called after the xpuruntime candidate's first run
(what it drives, a captured graph say, exists by then). A call that is one library call is a ``functools.partial``
(no Python frame of its own), as :func:`xpuruntime.inference.bench.bench` calls xpuruntime's rows.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["onnxruntime", "torch", "openvino", "same_instance"]

Maker = tuple[Callable[[dict[str, Any], str], Callable[[], Any]], list[str]]


def onnxruntime(eng: Any) -> Maker:
    """``onnxruntime.InferenceSession`` with the engine's model copy, SessionOptions and providers; on CUDA with
    graphs or device I/O, one IO binding built once (the best a hand-written loop does)."""
    import onnxruntime as ort

    source = str(eng.model.path) if eng.model.path else eng.model.data
    sess = ort.InferenceSession(source, sess_options=eng._session_options(), providers=eng.plan.providers)
    return _ort_maker(eng, sess, lambda feeds, io: _ort_graph_loop(sess, feeds, io)), \
        ["onnxruntime.InferenceSession, same model copy, SessionOptions and providers"]


def _ort_maker(eng: Any, sess: Any, graph_loop: Callable[[dict[str, Any], str], Callable[[], Any]]) -> Any:
    """``make(feeds, io)`` over ``sess``: ``sess.run`` on the CPU or with host I/O, ``graph_loop`` under CUDA graphs,
    else one IO binding of OrtValues built once."""
    on_cuda = eng._device_type() == "cuda"
    graphs = bool(eng.policy.execution.cuda_graphs and on_cuda)

    def make(feeds: dict[str, Any], io: str) -> Callable[[], Any]:
        if not on_cuda or (io == "host" and not graphs):
            return functools.partial(sess.run, None, feeds)
        if graphs:
            return graph_loop(feeds, io)
        return _ort_bound_loop(sess, feeds, io)
    return make


def _ort_bound_loop(sess: Any, feeds: dict[str, Any], io: str) -> Callable[[], Any]:
    """One IO binding of ``sess`` over OrtValues it allocated on the device (ORT's documented way), built once."""
    import onnxruntime as ort

    shapes = {o.name: v.shape for o, v in zip(sess.get_outputs(), sess.run(None, feeds))}
    binding = sess.io_binding()
    inputs = {k: ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0) for k, v in feeds.items()}
    for k, v in inputs.items():
        binding.bind_ortvalue_input(k, v)
    outputs = {o.name: ort.OrtValue.ortvalue_from_shape_and_type(
        list(shapes[o.name]), np.dtype(_ort_dtype(o.type)), "cuda", 0) for o in sess.get_outputs()}
    for k, v in outputs.items():
        binding.bind_ortvalue_output(k, v)
    return _bound_call(sess, binding, inputs, list(outputs.values()), feeds, io)


def _ort_graph_loop(sess: Any, feeds: dict[str, Any], io: str) -> Callable[[], Any]:
    """ONNX Runtime's documented CUDA-graph recipe: inputs and outputs bound before the first run (the run that
    captures), outputs left to ORT to allocate, inputs updated in place afterwards."""
    import onnxruntime as ort

    binding = sess.io_binding()
    inputs = {k: ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0) for k, v in feeds.items()}
    for k, v in inputs.items():
        binding.bind_ortvalue_input(k, v)
    for o in sess.get_outputs():
        binding.bind_output(o.name, "cuda", 0)
    sess.run_with_iobinding(binding)  # captures the graph on these buffers
    return _bound_call(sess, binding, inputs, binding.get_outputs(), feeds, io)


def _bound_call(sess: Any, binding: Any, inputs: dict[str, Any], outputs: list[Any], feeds: dict[str, Any],
                io: str) -> Callable[[], Any]:
    """The timed call over a built binding: device I/O runs it alone; host I/O copies the feeds into the bound
    inputs in place first and reads the outputs back."""
    if io == "device":
        return functools.partial(sess.run_with_iobinding, binding)

    def host_call() -> Any:
        for k, v in inputs.items():
            v.update_inplace(feeds[k])
        sess.run_with_iobinding(binding)
        return [v.numpy() for v in outputs]
    return host_call


def _ort_dtype(type_str: str) -> str:
    from xpuruntime.inference.engines._onnxruntime import ORT_TYPES

    return ORT_TYPES[type_str]


def torch(eng: Any) -> Maker:
    """The module moved and cast by hand (``.half()``/``.bfloat16()`` of every weight, norms included: the
    engine's ``precision_mode="cast-all"``; its default ``"cast"`` keeps norms float32, two casts more per norm),
    ``torch.compile``\\ d with the same arguments, CUDA graphs captured by hand where xpuruntime captures them."""
    import torch as th

    from xpuruntime.inference.engines.torch import _compile_kwargs, _compile_option

    source = eng.model.model
    module = source.module() if eng.model.exported else copy.deepcopy(source)
    module = module.to(eng.target).eval()
    dtype = _cast_dtype(eng)
    notes = [f"module.to({dtype})" if dtype else "module as given"]
    if dtype is not None:
        module.to(dtype)
    option = _compile_option(eng.policy, eng.options)
    fn = th.compile(module, **_compile_kwargs(option, eng.policy)) if option else module
    if option:
        notes.append(f"torch.compile({_compile_kwargs(option, eng.policy)})")
    names = [i.name for i in eng.input_info]
    graphs = eng._use_graph()

    def make(feeds: dict[str, Any], io: str) -> Callable[[], Any]:
        return _module_loop(fn, names, feeds, io, eng.target, dtype, graphs)

    return make, notes


def _cast_dtype(eng: Any) -> Any:
    """The torch dtype the engine cast the weights to, or None."""
    import torch as th

    return getattr(th, {"fp16": "float16", "bf16": "bfloat16"}[eng.cast_dtype]) if eng.cast_dtype else None


def _module_loop(fn: Callable[..., Any], names: list[str], feeds: dict[str, Any], io: str, target: Any, dtype: Any,
                 graphs: bool = False) -> Callable[[], Any]:
    """A hand loop over ``fn``: each numpy feed made a tensor on ``target`` (cast like the weights) inside
    ``inference_mode``, floating outputs read back as float32 numpy; ``graphs`` captures ``fn`` by hand first.
    Device I/O calls it on tensors made once (ordinary tensors, as the bench's device feeds are)."""
    import torch as th

    def prepare(value: Any) -> Any:
        t = th.from_numpy(np.ascontiguousarray(value)).to(target)
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    static = [prepare(feeds[n]) for n in names]
    run = _graphed(fn, static) if graphs else fn
    if io == "device":
        def device_call() -> Any:
            with th.inference_mode():
                return run(*static)
        return device_call

    def host_call() -> Any:
        with th.inference_mode():
            out = run(*[prepare(feeds[n]) for n in names])
        return [t.float().cpu().numpy() for t in _tensors(out)]
    return host_call


def _graphed(fn: Callable[..., Any], static: list[Any]) -> Callable[..., Any]:
    """torch's documented capture recipe: warm up on a side stream, capture, replay after copying inputs in."""
    import torch as th

    stream = th.cuda.Stream()
    stream.wait_stream(th.cuda.current_stream())
    with th.cuda.stream(stream), th.inference_mode():
        for _ in range(3):
            fn(*static)
    th.cuda.current_stream().wait_stream(stream)
    graph = th.cuda.CUDAGraph()
    with th.cuda.graph(graph), th.inference_mode():
        out = fn(*static)

    def replay(*xs: Any) -> Any:
        for s, x in zip(static, xs):
            if s is not x:
                s.copy_(x)
        graph.replay()
        return out
    return replay


def _tensors(out: Any) -> list[Any]:
    import torch as th

    if isinstance(out, th.Tensor):
        return [out]
    if isinstance(out, dict):
        return [v for v in out.values() if isinstance(v, th.Tensor)]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _tensors(item)]
    return []


def openvino(eng: Any) -> Maker:
    """``openvino.Core().compile_model`` with the engine's (reshaped) model, device and config; one infer request."""
    import openvino as ov

    compiled = ov.Core().compile_model(eng.ov_model, eng.plan.device, dict(eng.plan.config))
    request = compiled.create_infer_request()

    def make(feeds: dict[str, Any], io: str) -> Callable[[], Any]:
        return functools.partial(request.infer, feeds)

    return make, [f"openvino compile_model on {eng.plan.device} with the same config"]


# -- the xpuruntime engine's own instance, from a hand-written loop ------------------------------------------
def same_instance(eng: Any) -> Maker:
    """The engine's own instance driven by hand (see the module docstring); ValueError for an engine or a
    configuration with no such loop."""
    makers = {"onnxruntime": _same_onnxruntime, "torch": _same_torch, "openvino": _same_openvino}
    if eng.name not in makers:
        raise ValueError(f"no same-instance loop for engine {eng.name!r}")
    return makers[eng.name](eng)


def _same_onnxruntime(eng: Any) -> Maker:
    def own_graph(feeds: dict[str, Any], io: str) -> Callable[[], Any]:
        graph = eng._graph
        if io != "host" or graph is None or graph.binding is None:
            raise ValueError("no same-instance loop for CUDA graphs with device I/O (one graph per session, "
                             "bound to xpuruntime's buffers)")
        outs = list(graph.outputs.values())
        return _bound_call(eng.session, graph.binding, dict(graph.inputs), outs, feeds, io)  # its captured buffers

    # device I/O without graphs: a second binding of the same session, over buffers of its own
    return _ort_maker(eng, eng.session, own_graph), \
        ["xpuruntime's own onnxruntime.InferenceSession (and CUDA-graph binding) from a hand loop"]


def _same_torch(eng: Any) -> Maker:
    import torch as th

    dtype = _cast_dtype(eng)
    names = [i.name for i in eng._inputs]
    notes = ["xpuruntime's own module (cast, compiled or captured) from a hand loop"]
    if eng.plan.native.settings:
        notes.append("torch's switches as the process has them: the loop does not set "
                     f"{sorted(eng.plan.native.settings)}")
    if eng.plan.native.autocast is not None and dtype is None:
        notes.append(f"no autocast: the loop runs the module as loaded (xpuruntime enters {eng.plan.native.autocast} "
                     "autocast every run)")

    def make(feeds: dict[str, Any], io: str) -> Callable[[], Any]:
        graph = eng._graph
        if graph is not None and graph.captured:  # xpuruntime's captured graph, replayed by hand
            statics = list(zip(names, graph.static_args))
            outs = _tensors(graph.outputs)
            if io == "device":
                return graph.graph.replay

            def replay() -> Any:
                for k, static in statics:
                    static.copy_(th.from_numpy(feeds[k]))
                graph.graph.replay()
                return [t.cpu().numpy() for t in outs]
            return replay
        return _module_loop(eng._compiled if eng._compiled is not None else eng.module, names, feeds, io,
                            eng.target, dtype)

    return make, notes


def _same_openvino(eng: Any) -> Maker:
    request = eng.compiled.create_infer_request()  # a request of xpuruntime's own compiled model

    def make(feeds: dict[str, Any], io: str) -> Callable[[], Any]:
        return functools.partial(request.infer, feeds)

    return make, ["an infer request of xpuruntime's own compiled OpenVINO model"]
