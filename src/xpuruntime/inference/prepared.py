"""A prepared run: one feed configuration checked once, then run with nothing but the engine's own call.

:meth:`InferenceSession.prepare <xpuruntime.InferenceSession.prepare>` runs the feeds once through the full path
(every check, the first compilation or capture, the receipt judged by the fallback rule) and returns a
:class:`PreparedRun`. Calling it runs the same configuration again the way a hand-written loop over the engine
does: ONNX Runtime's ``run`` or ``run_with_iobinding`` of one binding, a captured CUDA graph's replay, the compiled
module's call. What is left per call is what that configuration still needs checked: that each numpy feed has
the prepared shape and dtype, and that each device feed is the prepared tensor.

Why: xpuruntime's general ``run()`` checks every feed and output buffer, records a trace span and builds its
result on every call. Each of those costs a few microseconds warm, and several times that right after the engine's
own work (``benchmarks/profile_in_situ.py``): about 30 us a call, 5-10% of a 0.3 ms CUDA-graph call. A serving loop
that runs one configuration over and over pays that for nothing; a prepared run pays it once.

The contract, for device tensors (ONNX Runtime IO binding, a CUDA graph's static inputs): refill them in place
(``x.copy_(new)``) and call ``run()`` with no feeds. The same works for numpy feeds (``run.inputs``), and is the
leanest call: nothing is checked. Do not resize or re-point one after ``prepare`` (``resize_``,
``set_``): an engine bound to its address (IO binding, a graph's input copy) keeps reading and writing its first
memory, which the prepared run holds alive (never freed memory, never another tensor's), and an engine that takes
the tensor itself raises on the new shape. Prepare again instead.

Spans: a prepared call records its trace span (and NVTX range) only while a
:func:`xpuruntime.runtime.profiler.profile` is collecting or an NVTX tool is attached (Nsight Systems).

>>> run = sess.prepare({"x": x})        # doctest: +SKIP
>>> y = run()["y"]                      # the same feeds again
>>> y = run({"x": x2})["y"]             # new numpy feeds of the same shapes and dtypes
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from xpuruntime.errors import InputError, XpuRuntimeError
from xpuruntime.runtime import profiler as _profiler
from xpuruntime.runtime.profiler import _ACTIVE

if TYPE_CHECKING:
    from xpuruntime.inference.engine import Engine

__all__ = ["PreparedRun"]

#: an engine's lean call: the feeds (numpy arrays of the prepared shapes, or the prepared device values as the
#: engine checked them) -> the results of the prepared output names, in order
LeanCall = Callable[[dict[str, Any]], list[Any]]


class PreparedRun:
    """One configuration of a session's run (feeds, output names, caller-owned output buffers), checked once.

    ``run()`` runs the feeds given to ``prepare`` again as they are now (device tensors refilled in place, numpy
    arrays changed in place); ``run(feeds)`` takes new numpy feeds of the same shapes and dtypes, with each device
    feed the tensor it was prepared with. Results have the form ``run()`` of the session gives (a dict for dict
    feeds); with ``outputs=`` they are written into those buffers and the dict maps names to them. Feeds of
    another shape, dtype or device buffer raise :class:`~xpuruntime.InputError` (prepare another run, or call the
    session's ``run``). One prepared run may be called from several threads (the engine serialises what it
    shares), but its device buffers are the caller's: refill them from one thread.
    """

    __slots__ = ("_engine", "_call", "_names", "_spec", "_given", "_host", "_as_dict", "_refresh", "_traced",
                 "_keep", "_contiguous", "__weakref__")

    def __init__(self, engine: Engine, feeds: Any, checked: dict[str, Any], names: Sequence[str],
                 outputs: Mapping[str, Any] | None, call: LeanCall) -> None:
        self._engine, self._call, self._names = engine, call, list(names)
        self._contiguous = engine.contiguous_feeds
        # per input: (name, shape, dtype) of a numpy feed, or (name, the prepared object, None) of a device feed
        named = _named(feeds, list(checked))
        spec: list[tuple[str, Any, Any]] = []
        for name, value in checked.items():
            host = _host_value(value, named.get(name))
            spec.append((name, host.shape, host.dtype) if host is not None else (name, named.get(name), None))
        # string (object) inputs: every call's feeds get the engine's full check, which checks each element (a
        # dtype no array has sends them to _checked)
        self._spec = tuple((n, s, _CHECK_ALWAYS if d is not None and d.kind == "O" else d) for n, s, d in spec)
        self._host = all(dtype is not None for _, _, dtype in spec)
        # the prepared feeds as the lean call takes them: device values as the engine checked them; numpy arrays as
        # the caller gave them where they are arrays (so that refilling them in place is seen), else as checked
        given, refresh = {}, []
        for name, _, dtype in spec:
            source = named.get(name)
            if dtype is None or not isinstance(source, np.ndarray):
                given[name] = checked[name]
            elif checked[name] is source or type(checked[name]) is not np.ndarray or not self._contiguous:
                given[name] = source  # the caller's array (an engine checking into tensors, or one taking strides)
            else:  # converted for an engine that needs C order: converted again on every call without feeds
                given[name] = checked[name]
                refresh.append((name, source))
        self._given, self._refresh = given, tuple(refresh)
        self._as_dict = isinstance(feeds, Mapping)
        self._keep = _storages([*named.values(), *(outputs or {}).values()])  # a resized tensor's first memory
        self._traced = _profiler.nvtx_attached()
        engine._prepared.add(self)  # engine.close() closes this run too (no per-call check)
        # the call written out for this configuration; with an NVTX tool attached every call records its range,
        # which only the general __call__ does
        specialised = None if self._traced else written_out(_specialised, self._spec if self._host else None,
                                                            self._names, self._contiguous, self._as_dict)
        if specialised is not None:
            self.__class__ = specialised  # (the same slots: only __call__ differs)

    @property
    def output_names(self) -> list[str]:
        return list(self._names)

    @property
    def inputs(self) -> dict[str, Any]:
        """The prepared feeds by name (the caller's numpy arrays and device tensors): refill them in place
        (``np.copyto(run.inputs["x"], new)``, ``x.copy_(new)``) and call ``run()``, the leanest call (no feed
        check at all)."""
        named = {name: shape for name, shape, dtype in self._spec if dtype is None}
        named.update(self._refresh)
        return {name: named.get(name, value) for name, value in self._given.items()}

    def _close(self) -> None:
        """The session closed: every later call raises (set once here, not checked per call)."""
        self._call = closed_call(self._engine)

    def __call__(self, feeds: Any = None) -> Any:
        """Run the prepared configuration: ``run()`` (the prepared feeds as they are now) or ``run(feeds)`` (new
        numpy feeds of the prepared shapes and dtypes); results as the session's ``run`` gives them."""
        as_dict = True
        if feeds is None:
            given = self._given if not self._refresh else self._refreshed()
            as_dict = self._as_dict
        elif type(feeds) is dict and len(feeds) == len(self._spec):  # the general test of the prepared feeds:
            for name, shape, dtype in self._spec:                      # device feeds by identity, any number of
                value = feeds.get(name)                                # inputs (_specialised writes out the rest)
                if dtype is None:
                    if value is not shape:
                        given = self._checked(feeds)
                        break
                elif type(value) is not np.ndarray or value.shape != shape or value.dtype is not dtype \
                        or self._contiguous and not value.flags.c_contiguous:  # (dtype: numpy's own instance;
                    given = self._checked(feeds)            # an equal other one: the full check, then the run)
                    break
            else:
                given = feeds if self._host else self._merged(feeds)
        else:
            given = self._checked(feeds)
            as_dict = isinstance(feeds, Mapping)
        if self._traced or _ACTIVE.get() is not None:
            return self._traced_call(given, as_dict)
        try:
            results = self._call(given)
        except XpuRuntimeError:
            raise
        except Exception as exc:  # noqa: BLE001 - the engine library's own errors, as Engine.run wraps them
            raise self._engine.run_error(exc) from None
        return dict(zip(self._names, results)) if as_dict else list(results)  # the form of the feeds, as run()

    def _traced_call(self, given: dict[str, Any], as_dict: bool) -> Any:
        """The call with its trace span (NVTX range, a profile's record, the receipt's bounded span list); a profile
        replays this call's feeds."""
        engine, names = self._engine, self._names
        spans = engine._spans
        mark = spans.begin("run")
        try:
            results = self._call(given)
        except XpuRuntimeError:
            raise
        except Exception as exc:  # noqa: BLE001 - as in __call__
            raise engine.run_error(exc) from None
        finally:
            spans.end(mark, lambda: engine._profile(given, names), {"prepared": True})
        return dict(zip(names, results)) if as_dict else list(results)

    # -- feeds -----------------------------------------------------------------------------
    def _refreshed(self) -> dict[str, Any]:
        """The prepared feeds, with each numpy array the engine needed converted (not C-contiguous) converted again
        from the caller's array as it is now."""
        given = dict(self._given)
        for name, source in self._refresh:
            given[name] = np.ascontiguousarray(source)
        return given

    def _merged(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """The prepared device values with the new numpy feeds."""
        if all(dtype is None for _, _, dtype in self._spec):
            return self._given
        return {name: feeds[name] if dtype is not None else self._given[name] for name, _, dtype in self._spec}

    def _checked(self, feeds: Any) -> dict[str, Any]:
        """Feeds off the fast path of :meth:`__call__`: the engine's full check (a bad feed gets the session's own
        error), then each checked feed compared with the prepared configuration."""
        engine = self._engine
        checked = engine.check_feeds(feeds, engine._feeds)
        named = _named(feeds, list(checked))
        for name, shape, dtype in self._spec:
            given = named.get(name)
            value = _host_value(checked.get(name), given)
            if dtype is None:
                if given is not shape:
                    raise InputError(f"input {name!r} is not the device tensor this run was prepared with",
                                     expected="the same tensor, refilled in place (x.copy_(new)), or no feeds",
                                     received=f"another {type(given).__name__}",
                                     hint="call run() with no feeds after refilling the prepared tensors, or "
                                          "prepare another run (session.prepare) for these feeds")
            elif value is None or value.shape != shape or dtype is not _CHECK_ALWAYS and value.dtype != dtype:
                got = f"{value.dtype}{list(value.shape)}" if value is not None else f"a {type(given).__name__}"
                raise InputError(f"input {name!r} does not fit this prepared run",
                                 expected=f"a numpy array {dtype}{list(shape)}", received=got,
                                 hint="prepare another run (session.prepare) for these feeds, or call session.run")
        return checked if self._host else self._merged(checked)

    def __repr__(self) -> str:
        feeds = ", ".join(f"{n}: {d}{list(s)}" if d is not None else f"{n}: bound tensor" for n, s, d in self._spec)
        return f"PreparedRun({self._engine.name}, {{{feeds}}} -> {self._names})"


#: the most inputs and outputs a prepared run's call is written out for (beyond: the general ``__call__``)
_SPECIALISE_MAX = 32


class _CheckAlways:
    """The dtype of a string (object) input in a prepared run's spec: no array's dtype is this object, so its
    feeds always take the engine's full check (each element a string)."""

    kind = "O"

    def __repr__(self) -> str:
        return "object (every element checked)"


_CHECK_ALWAYS: Any = _CheckAlways()


def written_out(make: Callable[..., Any], spec: tuple[tuple[str, Any, Any], ...] | None, names: Sequence[str],
                *args: Any) -> Any:
    """``make(spec, names, *args, dtype_ids)`` (:func:`_specialised`, :func:`_repeat_factory`), or None when the
    configuration cannot be written out: names that are not plain ``str`` (a ``str`` subclass's ``repr`` or an
    ``np.str_`` would go into the source, and equal keys would share a cache entry). The ids of the dtype objects
    join the cache key: numpy has equal dtypes that are distinct objects (``np.longlong`` and ``np.int64``), and
    the written-out test is ``is``."""
    if any(type(name) is not str for name in names) or \
            spec is not None and any(type(name) is not str for name, _, _ in spec):
        return None
    ids = tuple(id(dtype) for _, _, dtype in spec) if spec is not None else ()
    return make(spec, tuple(names), *args, ids)


def _feed_tests(spec: tuple[tuple[str, Any, Any], ...], contiguous: bool, namespace: dict[str, Any],
                indent: str) -> list[str]:
    """The written-out test of dict feeds against ``spec``: one line binding each feed, then one ``if`` over them
    all (exact ``ndarray``, the shape, numpy's own dtype instance, C order where the engine needs it)."""
    lines, tests = [], []
    for i, (name, shape, dtype) in enumerate(spec):
        namespace[f"shape{i}"], namespace[f"dtype{i}"] = shape, dtype
        lines.append(f"{indent}v{i} = feeds.get({name!r})")
        tests.append(f"type(v{i}) is ndarray and v{i}.shape == shape{i} and v{i}.dtype is dtype{i}"
                     + (f" and v{i}.flags.c_contiguous" if contiguous else ""))
    return [*lines, f"{indent}if " + " and ".join(tests) + ":"]


def _as_mapping(names: tuple[str, ...]) -> str:
    """The result dict of ``r`` (the lean call's list) as one expression."""
    return "{" + ", ".join(f"{name!r}: r[{i}]" for i, name in enumerate(names)) + "}"


def _written_out(source: list[str], namespace: dict[str, Any], what: str) -> Any:
    exec(compile("\n".join(source) + "\n", f"<xpuruntime {what}, written out>", "exec"), namespace)  # noqa: S102
    return namespace


_CALL = ["try:",
         "    r = {call}({given})",
         "except XpuRuntimeError:",
         "    raise",
         "except Exception as exc:  # the engine library's own errors, as Engine.run wraps them",
         "    raise {run_error}(exc) from None"]


@functools.lru_cache(maxsize=256)
def _specialised(spec: tuple[tuple[str, Any, Any], ...] | None, names: tuple[str, ...], contiguous: bool,
                 as_dict: bool, _dtype_ids: tuple[int, ...]) -> type[PreparedRun] | None:
    """A subclass of :class:`PreparedRun` whose ``__call__`` is this configuration's fast path written out, or None.

    Right after the engine's work each bytecode, attribute load and frame of the per-call layer costs several
    times its warm price (``benchmarks/profile_in_situ.py``), so the call is generated once per configuration, as
    ``dataclasses`` and ``namedtuple`` generate theirs: the checks of each numpy feed unrolled (:func:`_feed_tests`),
    the result dict built in one expression. Anything else (other feeds, a profile collecting) takes
    :meth:`PreparedRun.__call__`, which checks fully and raises what it raises; a run made with an NVTX tool
    attached keeps the general call (its every call records a range). ``spec``: the numpy feeds'
    (name, shape, dtype), or None where a feed is a device tensor (only ``run()`` is written out then). Shapes
    and dtypes live in the generated function's namespace; names enter the source through ``repr``."""
    if len(names) > _SPECIALISE_MAX or (spec is not None and len(spec) > _SPECIALISE_MAX):
        return None
    namespace: dict[str, Any] = {"ndarray": np.ndarray, "active": _ACTIVE.get, "XpuRuntimeError": XpuRuntimeError,
                                 "general": PreparedRun.__call__}
    call = [line.replace("{call}", "self._call").replace("{run_error}", "self._engine.run_error") for line in _CALL]
    lines = ["def __call__(self, feeds=None):"]
    if spec is not None:
        lines.append(f"    if type(feeds) is dict and len(feeds) == {len(spec)} and active() is None:")
        lines += _feed_tests(spec, contiguous, namespace, "        ")
        lines += ["            " + line.format(given="feeds") for line in call]
        lines.append(f"            return {_as_mapping(names)}")
    lines.append("    if feeds is None and not self._refresh and active() is None:")
    lines += ["        " + line.format(given="self._given") for line in call]
    lines.append(f"        return {_as_mapping(names) if as_dict else 'list(r)'}")
    lines.append("    return general(self, feeds)")
    method = _written_out(lines, namespace, "PreparedRun")["__call__"]
    method.__doc__, method.__qualname__ = PreparedRun.__call__.__doc__, "PreparedRun.__call__"
    return type(PreparedRun)("PreparedRun", (PreparedRun,), {
        "__slots__": (), "__call__": method, "__module__": __name__, "__qualname__": "PreparedRun",
        "__doc__": PreparedRun.__doc__})


def closed_call(engine: Engine) -> LeanCall:
    """The lean call of a closed engine: it raises the engine's closed-session error. Closing swaps it in for the
    call of every prepared run and repeat, so a call that raced ``close()`` never reaches released resources."""
    def closed(_given: dict[str, Any]) -> list[Any]:
        engine._check_open()
        raise AssertionError("unreachable: the engine is closed")  # pragma: no cover
    return closed


#: what a :func:`repeater` returns for feeds it does not take (the session's full ``run`` takes them)
MISS: Any = object()


def repeater(engine: Engine, spec: tuple[tuple[str, Any, Any], ...], names: Sequence[str],
             call: LeanCall) -> Callable[[Any], Any] | None:
    """``Engine.run``'s repeat of its last configuration of numpy feeds: the call a prepared run makes, with the
    run's trace span, or None (too many inputs or outputs to write out).

    ``session.run`` checks every feed against the model on every call; a loop feeding one configuration again
    pays that for nothing. After the same configuration (dict of C-order numpy arrays the engine took as they
    are, default outputs) ran twice through the full path, ``Engine.run`` keeps this: the written-out test of
    :func:`_feed_tests`, the span begun and ended as the full path does, the engine's lean call, the result dict.
    Anything else returns :data:`MISS` and takes the full path (a profile collecting included: its replay needs
    the full path's record). Never made with an NVTX tool attached (``Engine._remember``): the span is begun
    inline, without the range ``SpanLog.begin`` would open."""
    factory = written_out(_repeat_factory, spec, names, engine.contiguous_feeds)
    if factory is None:
        return None
    return factory(call, engine._spans.end, engine.run_error)  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=256)
def _repeat_factory(spec: tuple[tuple[str, Any, Any], ...], names: tuple[str, ...],
                    contiguous: bool, _dtype_ids: tuple[int, ...]) -> Callable[..., Callable[[Any], Any]] | None:
    """The written-out :func:`repeater` of one configuration, as a factory of the engine's own objects."""
    if len(names) > _SPECIALISE_MAX or len(spec) > _SPECIALISE_MAX:
        return None
    namespace: dict[str, Any] = {"ndarray": np.ndarray, "active": _ACTIVE.get, "XpuRuntimeError": XpuRuntimeError,
                                 "MISS": MISS, "time_ns": time.time_ns}
    call = [line.replace("{call}", "call").replace("{run_error}", "run_error") for line in _CALL]
    lines = ["def make(call, end, run_error):",
             "    def repeat(feeds):",
             f"        if type(feeds) is dict and len(feeds) == {len(spec)} and active() is None:"]
    lines += _feed_tests(spec, contiguous, namespace, "            ")
    lines.append("                mark = ('run', time_ns(), None)  # begin('run') with no NVTX tool attached")
    lines += ["                " + line.format(given="feeds") for line in call]
    lines += ["                finally:",
              "                    end(mark)",
              f"                return {_as_mapping(names)}",
              "        return MISS",
              "    def close(closed):  # Engine.close: later calls (a caller that took the repeat first) raise",
              "        nonlocal call",
              "        call = closed",
              "    repeat.close = close",
              "    return repeat"]
    return _written_out(lines, namespace, "Engine.run repeat")["make"]  # type: ignore[no-any-return]


def _host_value(checked: Any, given: Any) -> np.ndarray | None:
    """The numpy array a feed is on the host (as checked, else as the caller gave it: subclasses such as
    ``np.memmap`` included), or None for a device feed."""
    if isinstance(checked, np.ndarray):
        return checked
    return given if isinstance(given, np.ndarray) else None


def _named(feeds: Any, names: list[str]) -> dict[str, Any]:
    """The caller's feed objects by input name (a dict as it is; a list or tuple in input order)."""
    if isinstance(feeds, Mapping):
        return {n: feeds[n] for n in names if n in feeds}
    values = list(feeds) if isinstance(feeds, (list, tuple)) else [feeds]
    return dict(zip(names, values))


def _storages(values: Sequence[Any]) -> list[Any]:
    """The storage of every torch tensor among ``values``: held, a tensor resized or re-pointed in place keeps its
    first memory allocated (and bound), never handed to another tensor while an engine writes there."""
    out = []
    for value in values:
        storage = getattr(value, "untyped_storage", None)
        if storage is not None:
            try:
                out.append(storage())
            except Exception:  # noqa: BLE001 - a tensor without storage (a view of another kind): nothing to hold
                pass
    return out
