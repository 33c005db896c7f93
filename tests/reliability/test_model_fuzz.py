"""Models, fuzzed and booby-trapped: a ModelLoadError (or, for a damaged model that still parses, a run or an
XpuRuntimeError), never a raw engine exception, a hang or a crash, and nothing read outside the model's folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _rel_models import ONNX_ENGINES

from xpuruntime.errors import ModelLoadError, XpuRuntimeError
from xpuruntime.inference import InferenceSession
from xpuruntime.inference.feeds import random_feeds
from xpuruntime.inference.samples import matmul_relu, tiny_convnet, tiny_transformer

onnx = pytest.importorskip("onnx")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("XPURUNTIME_FUZZ_EXAMPLES", "200"))  # per engine; README "Reliability" quotes it
GUARD_SEEDS = 500  # per engine, in a child process that a crash cannot take pytest down with


def _samples() -> list[bytes]:
    return [m.SerializeToString() for m in (matmul_relu(k=8, n=4), tiny_convnet(channels=2, size=8),
                                             tiny_transformer(d_model=8, heads=2, ffn=16))]


SAMPLES = _samples()


def damage(data: bytes, edits: list[tuple[str, float, int]]) -> bytes:
    """Apply edits: flip a byte, truncate, insert junk or zero a run, each at a fraction of the length."""
    out = bytearray(data)
    for kind, where, value in edits:
        at = int(where * len(out)) if out else 0
        if kind == "flip" and out:
            out[min(at, len(out) - 1)] ^= value or 1
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = bytes([value]) * (value % 16 + 1)
        elif kind == "zero":
            out[at:at + value % 32 + 1] = bytes(min(value % 32 + 1, len(out) - at))
    return bytes(out)


def load_and_run(model: Any, engine: str) -> str:
    """The outcome the fuzzers allow: 'ran' or the XpuRuntimeError subclass; anything else propagates."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # violations of a damaged model are not the point here
            sess = InferenceSession(model, engine=engine, exec_policy={"fallback": "allow"})
        sess.run(random_feeds(sess.input_info))
    except XpuRuntimeError as exc:
        return type(exc).__name__
    return "ran"


_OUR_ERRORS = {cls.__name__ for cls in (XpuRuntimeError, *XpuRuntimeError.__subclasses__())} | {
    "OutOfMemoryError", "ExecutionTimeoutError"}
edits = st.lists(st.tuples(st.sampled_from(["flip", "truncate", "insert", "zero"]), st.floats(0, 1),
                           st.integers(0, 255)), min_size=1, max_size=6)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(sample=st.integers(0, len(SAMPLES) - 1), edits=edits, as_file=st.booleans())
def test_damaged_models_load_and_run_or_raise_our_errors(engine: str, sample: int, edits: list[Any], as_file: bool,
                                                         tmp_path_factory: Any) -> None:
    data = damage(SAMPLES[sample], edits)
    model: Any = data
    if as_file:
        model = tmp_path_factory.mktemp("m") / "model.onnx"
        model.write_bytes(data)
    assert load_and_run(model, engine) in ("ran", *_OUR_ERRORS)


_GUARD = r"""
import random, sys, warnings
sys.path.insert(0, sys.argv[1])
from test_model_fuzz import SAMPLES, damage, load_and_run
for engine in sys.argv[3:]:
    for seed in range(int(sys.argv[2])):
        rng = random.Random(seed)
        edits = [(rng.choice(["flip", "truncate", "insert", "zero"]), rng.random(), rng.randrange(256))
                 for _ in range(rng.randint(1, 6))]
        print(engine, seed, flush=True)
        load_and_run(damage(SAMPLES[seed % len(SAMPLES)], edits), engine)
print("done", flush=True)
"""


@pytest.mark.slow
def test_damaged_models_never_crash_the_process() -> None:
    """The same damage in a child process: a segfault or abort there is a failure here, with the seed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*sys.path])}
    proc = subprocess.run([sys.executable, "-c", _GUARD, str(Path(__file__).parent), str(GUARD_SEEDS), *ONNX_ENGINES],
                          capture_output=True, text=True, timeout=300, env=env)
    last = (proc.stdout.strip().splitlines() or ["nothing"])[-1]
    assert proc.returncode == 0 and last == "done", \
        f"child exited {proc.returncode} at {last!r} (engine seed):\n{proc.stderr[-3000:]}"


# -- special files ---------------------------------------------------------------------------
def test_empty_file_directory_and_fifo_are_model_load_errors(engine: str, tmp_path: Path) -> None:
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "dir.onnx").mkdir()
    os.mkfifo(tmp_path / "fifo.onnx")
    for name, words in (("empty.onnx", "empty"), ("dir.onnx", "directory"), ("fifo.onnx", "regular file")):
        with pytest.raises(ModelLoadError, match=words):
            InferenceSession(tmp_path / name, engine=engine)
    for model in (b"", b"\x00" * 64, b"not a model", tmp_path / "missing.onnx"):
        with pytest.raises(ModelLoadError):
            InferenceSession(model, engine=engine)


def test_non_utf8_names_are_a_model_load_error(engine: str) -> None:
    data = matmul_relu(k=8, n=4).SerializeToString().replace(b"matmul", b"mat\xa7ul")
    with pytest.raises(ModelLoadError, match="not UTF-8"):
        InferenceSession(data, engine=engine)


# -- external data ---------------------------------------------------------------------------
def external_model(folder: Path, location: str = "weights.bin") -> Path:
    """matmul_relu with its weight in ``folder/location`` (written there when the location is inside)."""
    model = matmul_relu(k=8, n=4)
    onnx.save(model, str(folder / "model.onnx"), save_as_external_data=True, location="weights.bin",
              size_threshold=0)
    saved = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for tensor in saved.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(saved, str(folder / "model.onnx"))
    return folder / "model.onnx"


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """``tmp/model/`` (the model's folder) and ``tmp/secret.fifo``: a FIFO outside it. Opening a FIFO for
    reading blocks until a writer comes, so an engine that tried to read it would hang, not pass by chance."""
    (tmp_path / "model").mkdir()
    os.mkfifo(tmp_path / "secret.fifo")
    return tmp_path / "model", tmp_path / "secret.fifo"


def refused_without_reading(make: Callable[[], Any], fifo: Path, match: str) -> None:
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            make()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome.append(exc)

    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # something opened the FIFO: unblock it, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        pytest.fail("an engine opened a file outside the model's folder")
    assert isinstance(outcome[0], ModelLoadError), outcome
    assert match in str(outcome[0])


@pytest.mark.parametrize("location", ["../secret.fifo", "{abs}", "sub/../../secret.fifo", "..\\secret.fifo"])
def test_external_data_outside_the_folder_is_refused_unread(engine: str, layout: tuple[Path, Path],
                                                            location: str) -> None:
    folder, fifo = layout
    path = external_model(folder, location.format(abs=fifo))
    refused_without_reading(lambda: InferenceSession(path, engine=engine), fifo, "relative path inside")


def test_external_data_through_a_symlink_leading_out_is_refused_unread(engine: str, layout: tuple[Path, Path]) -> None:
    folder, fifo = layout
    (folder / "link.bin").symlink_to(fifo)
    path = external_model(folder, "link.bin")
    refused_without_reading(lambda: InferenceSession(path, engine=engine), fifo, "outside the model's folder")


def test_external_data_that_is_a_fifo_inside_the_folder_is_refused_unread(engine: str, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "weights.fifo")
    path = external_model(tmp_path, "weights.fifo")
    refused_without_reading(lambda: InferenceSession(path, engine=engine), tmp_path / "weights.fifo", "regular file")


def test_missing_or_short_external_data_is_a_model_load_error(engine: str, tmp_path: Path) -> None:
    path = external_model(tmp_path)
    (tmp_path / "weights.bin").write_bytes((tmp_path / "weights.bin").read_bytes()[:-4])
    with pytest.raises(ModelLoadError, match="truncated"):
        InferenceSession(path, engine=engine)
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(ModelLoadError, match="cannot be read"):
        InferenceSession(path, engine=engine)


def test_external_data_in_bytes_or_a_proto_is_refused(engine: str, tmp_path: Path) -> None:
    proto = onnx.load(str(external_model(tmp_path)), load_external_data=False)
    for model in (proto, proto.SerializeToString()):
        with pytest.raises(ModelLoadError, match="no folder"):
            InferenceSession(model, engine=engine)


def test_external_data_inside_the_folder_still_runs(engine: str, tmp_path: Path, mm: Any,
                                                    mm_weight: np.ndarray) -> None:
    (tmp_path / "sub").mkdir()
    path = external_model(tmp_path / "sub")
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    out = InferenceSession(path, engine=engine).run({"x": x})["y"]
    np.testing.assert_allclose(out, np.maximum(x @ mm_weight, 0), rtol=1e-5, atol=1e-5)


_IMPOSSIBLE_AXIS = r"""
import sys
sys.path.insert(0, sys.argv[1])
import faulthandler; faulthandler.enable()
from test_model_fuzz import load_and_run
from xpuruntime.inference.samples import tiny_transformer
model = tiny_transformer(d_model=8, heads=2, ffn=16)
ln1 = next(n for n in model.graph.node if n.name == "ln1")
ln1.attribute[0].i = -404620279021569  # what one flipped byte made of axis -1 (the fuzzer's find, byte 93)
print(load_and_run(model.SerializeToString(), sys.argv[2]), flush=True)
"""


@pytest.mark.parametrize("engine", ONNX_ENGINES)
def test_an_axis_no_tensor_has_is_a_model_load_error_not_a_crash(engine: str) -> None:
    """Found by the in-process fuzzer in CI: OpenVINO 2026.4 reads and compiles a LayerNormalization whose axis is
    -404620279021569 and its CPU plugin then crashes the process in the first ``infer()``. Run in a child process
    (a crash there is a failure here): a ``ModelLoadError`` on every engine."""
    proc = subprocess.run([sys.executable, "-c", _IMPOSSIBLE_AXIS, str(Path(__file__).parent), engine],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["ModelLoadError"]


def test_an_impossible_axis_inside_a_subgraph_is_found() -> None:
    """The check reaches Loop and If bodies, and leaves custom domains alone (their attributes are their own)."""
    from onnx import helper as h

    from xpuruntime._graph_checks import impossible as _impossible_axis

    def graph(*nodes: Any) -> Any:
        return h.make_graph(list(nodes), "g", [], [])
    bad = h.make_node("Concat", ["a", "b"], ["c"], name="inner", axis=2**40)
    outer = graph(h.make_node("If", ["cond"], ["y"], then_branch=graph(bad), else_branch=graph()))
    assert "inner" in (_impossible_axis(outer) or "")
    assert _impossible_axis(graph(h.make_node("Squeeze", ["x"], ["y"], axes=[0, -1]))) is None
    assert _impossible_axis(graph(h.make_node("Custom", ["x"], ["y"], domain="com.example", axis=2**40))) is None
    assert "Unsqueeze" in (_impossible_axis(graph(h.make_node("Unsqueeze", ["x"], ["y"], axes=[0, -99]))) or "")


def test_constant_indices_are_checked_against_the_dimension_they_index() -> None:
    """Indices in [-d, d) of a static data dimension pass (negative ones included); one past either end is refused;
    with the data's shape unknown only indices beyond int32 are."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper

    from xpuruntime._graph_checks import impossible

    def scatter(index: int, dims: list[Any]) -> Any:
        i = numpy_helper.from_array(np.array([[0, index]], np.int64), "i")
        u = numpy_helper.from_array(np.ones((1, 2), np.float32), "u")
        node = h.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=-1)
        return h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, dims)], [], [i, u])
    for index in (-4, -1, 0, 3):
        assert impossible(scatter(index, [3, 4])) is None
    for index in (-5, 4):
        assert "constant index" in (impossible(scatter(index, [3, 4])) or "")
    assert impossible(scatter(-5, [3, "n"])) is None  # the dimension is not known: the engine decides
    assert "constant index" in (impossible(scatter(2**31, [3, "n"])) or "")


_CRASHERS = r"""
import sys
sys.path.insert(0, sys.argv[1])
import faulthandler; faulthandler.enable()
import numpy as np
from onnx import TensorProto as T, helper as h, numpy_helper
from test_model_fuzz import load_and_run

def one(op, inputs, shape, outs, attrs, inits=None, opset=18):
    node = h.make_node(op, inputs, outs, name=op.lower(), **attrs)
    g = h.make_graph([node], op, [h.make_tensor_value_info(inputs[0], T.FLOAT, shape)],
                     [h.make_tensor_value_info(o, T.FLOAT, None) for o in outs],
                     [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 9
    return m

X = [1, 2, 6, 6]
models = {
    "MaxPool strides": one("MaxPool", ["x"], X, ["y"], dict(kernel_shape=[2, 2], strides=[1, 2**40])),
    "grouped Conv strides": one("Conv", ["x", "w"], X, ["y"], dict(kernel_shape=[3, 3], strides=[1, 2**40], group=2),
                                dict(w=np.ones((2, 1, 3, 3), np.float32))),
    "GatherND batch_dims": one("GatherND", ["x", "i"], [2, 3, 4], ["y"], dict(batch_dims=-65),
                               dict(i=np.array([[1], [2]], np.int64))),
    "Split num_outputs": one("Split", ["x"], [2, 4], ["y0", "y1"], dict(axis=1, num_outputs=1)),
    "RoiAlign sampling_ratio": one("RoiAlign", ["x", "r", "bi"], X, ["y"],
                                   dict(output_height=2, output_width=2, sampling_ratio=2**40),
                                   dict(r=np.array([[0, 0, 3, 3]], np.float32), bi=np.array([0], np.int64))),
    "Pad pads": one("Pad", ["x", "p"], [2, 3], ["y"], dict(mode="constant"),
                    dict(p=np.array([-2**31] * 4, np.int64))),
    "CenterCropPad shape": one("CenterCropPad", ["x", "s"], [4, 6], ["y"], dict(axes=[0, 1]),
                               dict(s=np.array([2, 2**40], np.int64))),
    "ScatterElements index": one("ScatterElements", ["x", "i", "u"], [3, 4], ["y"], dict(axis=1),
                                 dict(i=np.array([[-5, 1], [2, 3], [1, 1]], np.int64), u=np.ones((3, 2), np.float32))),
    "GatherND index": one("GatherND", ["x", "i"], [2, 3, 4], ["y"], dict(batch_dims=1),
                          dict(i=np.array([[2**31 - 1], [1]], np.int64))),
}
for name, model in models.items():
    print(name.replace(" ", "_"), load_and_run(model.SerializeToString(), sys.argv[2]), flush=True)
"""


@pytest.mark.parametrize("engine", ONNX_ENGINES)
def test_values_onnx_does_not_allow_are_model_load_errors_not_crashes(engine: str) -> None:
    """Found by fuzzing every integer attribute and constant input with extreme values, in child processes: OpenVINO
    2026.4 dies on a MaxPool or grouped-Conv stride of 2**40 (SIGFPE), a Pad of -2**31 or a CenterCropPad shape
    of 2**40 (SIGSEGV); ONNX Runtime 1.32 on a GatherND batch_dims of -65 (SIGSEGV), a Split whose num_outputs is
    not its number of outputs or a RoiAlign sampling_ratio of 2**40 (abort); OpenVINO writes out of bounds with a
    ScatterElements index of -5 on a dimension of 4 and reads so with a GatherND index of 2**31 - 1. Each is outside
    the operator spec:
    a ``ModelLoadError`` on every engine, the process alive."""
    proc = subprocess.run([sys.executable, "-c", _CRASHERS, str(Path(__file__).parent), engine],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stdout[-1000:] + proc.stderr[-3000:]
    outcomes = dict(line.split() for line in proc.stdout.splitlines())
    assert set(outcomes.values()) == {"ModelLoadError"}, outcomes
    assert len(outcomes) == 9


def test_a_constant_shape_past_the_budget_is_refused_before_an_engine_allocates_it(monkeypatch: Any) -> None:
    """ConstantOfShape [1, 2**31] and Range(0, 2**31, 1): the engines allocated 8-16 GiB and the process was killed
    for memory. With a budget (the engines pass XPURUNTIME_MAX_INPUT_BYTES) each is a ModelLoadError naming it."""
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper

    from xpuruntime._graph_checks import impossible

    def graph(op: str, **consts: Any) -> Any:
        inits = [numpy_helper.from_array(np.asarray(v, np.int64), k) for k, v in consts.items()]
        node = h.make_node(op, list(consts), ["y"], name=op.lower())
        return h.make_graph([node], "g", [], [h.make_tensor_value_info("y", T.FLOAT, None)], inits)
    big = graph("ConstantOfShape", s=[1, 2**31])
    assert "bytes" in (impossible(big, budget=1 << 30) or "")
    assert impossible(big) is None and impossible(graph("ConstantOfShape", s=[2, 3]), budget=1 << 30) is None
    assert "range" in (impossible(graph("Range", a=0, b=2**31, c=1), budget=1 << 30) or "")
    assert impossible(graph("Range", a=0, b=10, c=1), budget=1 << 30) is None
    monkeypatch.setenv("XPURUNTIME_MAX_INPUT_BYTES", str(1 << 20))
    model = h.make_model(graph("ConstantOfShape", s=[1024, 1024]), opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    for engine in ONNX_ENGINES:
        with pytest.raises(ModelLoadError, match="XPURUNTIME_MAX_INPUT_BYTES"):
            InferenceSession(model.SerializeToString(), engine=engine)
