"""The conformance corpus: valid feeds, names and errors without torch; cached exports with it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from xpuruntime import corpus
from xpuruntime.errors import InputError


def test_import_is_light():
    code = "import sys, xpuruntime.corpus; print([m for m in ('torch', 'transformers') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_corpus_covers_the_issue_architectures():
    assert {"bert", "distilbert", "gpt2", "t5-encoder", "vit", "resnet50", "convnext", "efficientnet",
            "mobilenet", "minilm"} <= set(corpus.names())
    assert corpus.CORPUS["bert"].dynamic_dims == ("batch", "seq")


def test_sample_feeds_are_valid_inputs():
    feeds = corpus.sample_feeds("bert", {"batch": 8, "seq": 128}, seed=3)
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    assert ids.shape == mask.shape == (8, 128) and ids.dtype == np.int64
    assert 0 <= ids.min() and ids.max() < corpus.CORPUS["bert"].inputs[0].high
    assert set(np.unique(mask)) <= {0, 1} and mask[:, 0].all()
    assert (np.diff(mask, axis=1) <= 0).all()  # 1s then padding 0s, like a tokenizer
    np.testing.assert_array_equal(corpus.sample_feeds("bert", {"batch": 8, "seq": 128}, seed=3)["input_ids"], ids)
    assert corpus.sample_feeds("resnet50")["pixel_values"].shape == (2, 3, 64, 64)


@pytest.mark.parametrize(("call", "word"), [
    (lambda: corpus.sample_feeds("bart"), "bert"),
    (lambda: corpus.input_shapes("bert", {"sequence": 4}), "seq"),
    (lambda: corpus.input_shapes("bert", {"seq": 0}), "positive"),
    (lambda: corpus.sample_feeds("bert", size="large"), "tiny"),
])
def test_bad_requests_name_the_fix(call, word):
    with pytest.raises(InputError) as err:
        call()
    assert word in str(err.value)


def test_export_is_cached_private_and_loadable(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import onnx

    path = corpus.build_onnx("distilbert", dynamic=True, cache_dir=tmp_path)
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    mtime = os.stat(path).st_mtime_ns
    assert corpus.build_onnx("distilbert", dynamic=True, cache_dir=tmp_path) == path  # reused, not rebuilt
    assert os.stat(path).st_mtime_ns == mtime
    model = onnx.load(str(path))
    assert model.ir_version <= 10
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim] == ["batch", "seq"]
    fixed = onnx.load(str(corpus.build_onnx("distilbert", dynamic=False, cache_dir=tmp_path)))
    assert [d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim] == [2, 16]


def test_module_and_export_agree(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import onnxruntime as ort

    path = corpus.build_onnx("gpt2", dynamic=True, cache_dir=tmp_path)
    feeds = corpus.sample_feeds("gpt2", {"batch": 3, "seq": 24}, seed=1)  # not the traced shape
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with torch.no_grad():
        want = corpus.build_module("gpt2")(*(torch.from_numpy(v) for v in feeds.values())).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
