"""A conformance corpus: real architectures with seeded random weights, exported to ONNX or served as modules.

Each entry is a real ``transformers`` model class (BERT, DistilBERT, GPT-2, T5 encoder, ViT, ResNet-50,
ConvNeXt, EfficientNet, MobileNetV2) built from a config, never from downloaded weights. ``size="tiny"``
(the default) keeps the architecture (layer types, attention masks, causal masks, bottleneck and
depthwise blocks) with small widths and depths, so an export takes well under a second on two CPUs;
``size="base"`` uses the published sizes (BERT-base, MiniLM-L6, GPT-2 small, ResNet-50, ViT-B/16, ...) for
benchmarks. Exports are cached in a private folder (``_cache``: ``0o700``, checksummed, one builder at a
time), keyed by the model, its config, the shape mode and the torch/transformers versions.

torch and transformers are imported only inside functions (``pip install 'xpuruntime[corpus]'``).

>>> from xpuruntime import corpus
>>> path = corpus.build_onnx("bert", dynamic=True)             # doctest: +SKIP
>>> feeds = corpus.sample_feeds("bert", {"batch": 8, "seq": 128})  # doctest: +SKIP
>>> sorted(feeds)                                               # doctest: +SKIP
['attention_mask', 'input_ids']
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xpuruntime.errors import EngineUnavailableError, InputError, did_you_mean

__all__ = [
    "CORPUS",
    "SIZES",
    "CorpusModel",
    "InputSpec",
    "build_module",
    "build_onnx",
    "default_cache_dir",
    "input_shapes",
    "names",
    "sample_feeds",
]

SIZES = ("tiny", "base")
OPSET = 17
IR_VERSION = 10  # ONNX Runtime 1.2x refuses newer IR versions
_FORMAT = 2  # bump when the export recipe changes (weights, norms, wrapper): old cache entries are then never read


@dataclass(frozen=True)
class InputSpec:
    """One model input: its dims by name (sizes come from ``shapes``), dtype and value range.

    ``kind`` is ``ids`` (integers in ``[0, high)``), ``mask`` (1s then trailing 0s per row, like a
    tokenizer's padding) or ``pixels`` (standard normal floats).
    """

    name: str
    dims: tuple[str, ...]
    dtype: str
    kind: str
    high: int = 0  # exclusive upper bound of ``ids``


@dataclass(frozen=True)
class CorpusModel:
    """One corpus entry: a ``transformers`` class, its config per size, inputs and default shapes."""

    name: str
    family: str  # text | vision
    arch: str  # transformers model class
    config: str  # transformers config class
    configs: Mapping[str, Mapping[str, Any]]  # size -> config keyword arguments
    inputs: tuple[InputSpec, ...]
    shapes: Mapping[str, Mapping[str, int]]  # size -> dim name -> default fixed size
    dynamic_dims: tuple[str, ...]  # dims left symbolic in the dynamic export
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    note: str = ""

    def spec_for(self, size: str) -> dict[str, Any]:
        return dict(self.configs[_check_size(size)])


def _text(name: str, vocab: int) -> tuple[InputSpec, ...]:
    return (InputSpec("input_ids", ("batch", "seq"), "int64", "ids", vocab),
            InputSpec("attention_mask", ("batch", "seq"), "int64", "mask"))


_PIXELS = (InputSpec("pixel_values", ("batch", "channels", "height", "width"), "float32", "pixels"),)
_TEXT_SHAPES = {"tiny": {"batch": 2, "seq": 16}, "base": {"batch": 8, "seq": 128}}
_IMAGE_SHAPES = {"tiny": {"batch": 2, "channels": 3, "height": 64, "width": 64},
                 "base": {"batch": 8, "channels": 3, "height": 224, "width": 224}}
_BERT_TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
                  "vocab_size": 1000, "max_position_embeddings": 512}

CORPUS: dict[str, CorpusModel] = {m.name: m for m in (
    CorpusModel("bert", "text", "BertModel", "BertConfig",
                {"tiny": _BERT_TINY, "base": {"vocab_size": 30522}}, _text("bert", 1000),
                _TEXT_SHAPES, ("batch", "seq"), {"add_pooling_layer": False},
                "BERT-base at size base; padding mask becomes an additive attention mask"),
    CorpusModel("minilm", "text", "BertModel", "BertConfig",
                {"tiny": _BERT_TINY, "base": {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
                                                  "intermediate_size": 1536, "vocab_size": 30522}},
                _text("minilm", 1000), _TEXT_SHAPES, ("batch", "seq"), {"add_pooling_layer": False},
                "all-MiniLM-L6 shape (a BERT) at size base: the common sentence encoder"),
    CorpusModel("distilbert", "text", "DistilBertModel", "DistilBertConfig",
                {"tiny": {"dim": 64, "n_layers": 2, "n_heads": 4, "hidden_dim": 128, "vocab_size": 1000,
                              "max_position_embeddings": 512}, "base": {}},
                _text("distilbert", 1000), _TEXT_SHAPES, ("batch", "seq")),
    CorpusModel("gpt2", "text", "GPT2Model", "GPT2Config",
                {"tiny": {"n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 1000, "n_positions": 512,
                              "bos_token_id": 999, "eos_token_id": 999}, "base": {}},
                _text("gpt2", 1000), _TEXT_SHAPES, ("batch", "seq"), {"use_cache": False},
                "causal mask combined with the padding mask"),
    CorpusModel("t5-encoder", "text", "T5EncoderModel", "T5Config",
                {"tiny": {"d_model": 64, "num_layers": 2, "num_heads": 4, "d_kv": 16, "d_ff": 128, "vocab_size": 1000},
                 "base": {"d_model": 768, "num_layers": 12, "num_heads": 12, "d_kv": 64, "d_ff": 3072}},
                _text("t5-encoder", 1000), _TEXT_SHAPES, ("batch", "seq"), {},
                "relative position buckets; RMS norm"),
    CorpusModel("vit", "vision", "ViTModel", "ViTConfig",
                {"tiny": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128,
                              "image_size": 64, "patch_size": 16}, "base": {}},
                _PIXELS, _IMAGE_SHAPES, ("batch",), {"add_pooling_layer": False}, "ViT-B/16 at size base"),
    CorpusModel("resnet50", "vision", "ResNetModel", "ResNetConfig",
                {"tiny": {"embedding_size": 16, "hidden_sizes": [32, 64, 128, 256], "depths": [1, 1, 1, 1],
                              "layer_type": "bottleneck"}, "base": {}},
                _PIXELS, _IMAGE_SHAPES, ("batch", "height", "width"), {},
                "bottleneck blocks with batch norm folded by the exporter; ResNet-50 at size base"),
    CorpusModel("convnext", "vision", "ConvNextModel", "ConvNextConfig",
                {"tiny": {"hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1]}, "base": {}},
                _PIXELS, _IMAGE_SHAPES, ("batch", "height", "width"), {}, "ConvNeXt-T at size base"),
    CorpusModel("efficientnet", "vision", "EfficientNetModel", "EfficientNetConfig",
                {"tiny": {"width_coefficient": 0.25, "depth_coefficient": 0.25, "hidden_dim": 320, "image_size": 64},
                 "base": {"width_coefficient": 1.0, "depth_coefficient": 1.0, "hidden_dim": 1280, "image_size": 224}},
                _PIXELS, _IMAGE_SHAPES, ("batch", "height", "width"), {},
                "squeeze-excitation, swish; EfficientNet-B0 at size base"),
    CorpusModel("mobilenet", "vision", "MobileNetV2Model", "MobileNetV2Config",
                {"tiny": {"depth_multiplier": 0.35, "image_size": 64}, "base": {}},
                _PIXELS, _IMAGE_SHAPES, ("batch", "height", "width"), {},
                "depthwise convs, ReLU6; MobileNetV2 1.0 at size base"),
)}


def names() -> list[str]:
    """Corpus model names. >>> "bert" in names()
    True"""
    return list(CORPUS)


def _check_size(size: str) -> str:
    if size not in SIZES:
        raise InputError(f"unknown corpus size {size!r}", expected=" or ".join(SIZES), received=repr(size),
                         hint=did_you_mean(size, SIZES))
    return size


def _entry(name: str) -> CorpusModel:
    if name not in CORPUS:
        raise InputError(f"unknown corpus model {name!r}", expected=", ".join(CORPUS), received=repr(name),
                         hint=did_you_mean(name, CORPUS))
    return CORPUS[name]


def input_shapes(name: str, shapes: Mapping[str, int] | None = None, *, size: str = "tiny") -> dict[str, tuple[int, ...]]:
    """Input name -> concrete shape, from the default dim sizes overridden by ``shapes`` (dim name -> size).

    >>> input_shapes("bert", {"seq": 128})
    {'input_ids': (2, 128), 'attention_mask': (2, 128)}
    """
    entry = _entry(name)
    dims = {**entry.shapes[_check_size(size)], **(shapes or {})}
    unknown = sorted(set(shapes or {}) - set(entry.shapes[size]))
    if unknown:
        raise InputError(f"{name} has no dim {unknown[0]!r}", expected=", ".join(entry.shapes[size]),
                         received=", ".join(unknown))
    bad = {k: v for k, v in dims.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise InputError("corpus dims must be positive integers", expected="e.g. {'seq': 128}", received=str(bad))
    return {spec.name: tuple(dims[d] for d in spec.dims) for spec in entry.inputs}


def sample_feeds(name: str, shapes: Mapping[str, int] | None = None, seed: int = 0, *,
                 size: str = "tiny") -> dict[str, np.ndarray]:
    """Valid seeded inputs: token ids inside the vocabulary, padding masks of 1s then 0s (every row keeps
    at least one token), pixels drawn from a standard normal.

    >>> feeds = sample_feeds("gpt2", {"batch": 3, "seq": 8})
    >>> feeds["input_ids"].shape, int(feeds["attention_mask"][:, 0].min())
    ((3, 8), 1)
    """
    rng = np.random.default_rng(seed)
    entry, concrete = _entry(name), input_shapes(name, shapes, size=size)
    feeds: dict[str, np.ndarray] = {}
    for spec in entry.inputs:
        shape = concrete[spec.name]
        if spec.kind == "ids":
            feeds[spec.name] = rng.integers(0, spec.high, size=shape, dtype=np.int64)  # inside every size's vocab
        elif spec.kind == "mask":
            lengths = rng.integers(max(1, shape[-1] // 2), shape[-1] + 1, size=shape[:-1])
            feeds[spec.name] = (np.arange(shape[-1]) < lengths[..., None]).astype(spec.dtype)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return feeds


# -- building ------------------------------------------------------------------------------
def _imports() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise EngineUnavailableError(f"the corpus needs torch and transformers: {exc}",
                                     expected="torch and transformers installed", received="not installed",
                                     hint="pip install 'xpuruntime[corpus]'") from None
    return torch, transformers


@contextlib.contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """Exporter and config chatter (TracerWarning, config checks) off, restored afterwards."""
    logging = transformers.utils.logging
    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.set_verbosity(level)


def _config(entry: CorpusModel, size: str, transformers: Any) -> Any:
    return getattr(transformers, entry.config)(**entry.spec_for(size))  # default attention, as a user gets it


def _wrapper(torch: Any, entry: CorpusModel, model: Any) -> Any:
    """An nn.Module whose ``forward`` names the corpus inputs and returns ``last_hidden_state``."""

    class Text(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, **entry.model_kwargs)[0]

    class Vision(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: Any) -> Any:
            return self.model(pixel_values=pixel_values)[0]

    return (Text if entry.family == "text" else Vision)().eval()


def build_module(name: str, *, size: str = "tiny", seed: int = 0) -> Any:
    """The corpus model as an ``nn.Module`` in eval mode (seeded random weights), for ``engine="torch"``.

    Its ``forward`` takes the corpus inputs by name and returns the last hidden state.

    >>> module = build_module("resnet50")                         # doctest: +SKIP
    >>> InferenceSession(module, engine="torch",
    ...     engine_options={"example_inputs": tuple(sample_feeds("resnet50").values())})  # doctest: +SKIP
    """
    torch, transformers = _imports()
    entry = _entry(name)
    kwargs = {k: v for k, v in entry.model_kwargs.items() if k == "add_pooling_layer"}
    with _quiet(transformers), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, entry.arch)(_config(entry, size, transformers), **kwargs)
        module = _wrapper(torch, entry, model)
        _calibrate_norms(torch, module, name, size, seed)
    return module.eval()


def _calibrate_norms(torch: Any, module: Any, name: str, size: str, seed: int) -> None:
    """Batch norms as training leaves them (gamma 1, beta 0, statistics of one seeded batch): with the init's
    values activations of deep CNNs shrink layer by layer (MobileNetV2 ended near 1e-25, EfficientNet at 0),
    which would hide every precision problem."""
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for norm in norms:
        norm.reset_parameters()  # also gamma 1, beta 0 (some inits draw gamma near 0.02)
        norm.momentum = None  # a cumulative average: one batch sets the stats exactly
    feeds = sample_feeds(name, size=size, seed=seed + 1)
    module.train()
    with torch.no_grad():
        module(*(torch.from_numpy(v) for v in feeds.values()))


def _cache_key(name: str, size: str, dynamic: bool, seed: int) -> str:
    torch, transformers = _imports()
    entry = _entry(name)
    text = json.dumps([_FORMAT, name, size, dynamic, seed, torch.__version__, transformers.__version__, OPSET,
                       entry.arch, entry.spec_for(size), entry.shapes[size], dict(entry.model_kwargs)],
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def default_cache_dir() -> Path:
    """``$XPURUNTIME_CORPUS_CACHE``, else ``$XDG_CACHE_HOME/xpuruntime`` (``~/.cache/xpuruntime``)."""
    if os.environ.get("XPURUNTIME_CORPUS_CACHE"):
        return Path(os.environ["XPURUNTIME_CORPUS_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "xpuruntime"


def build_onnx(name: str, *, dynamic: bool, cache_dir: str | os.PathLike[str] | None = None, size: str = "tiny",
               seed: int = 0) -> Path:
    """The corpus model exported to ONNX (opset 17, IR 10) and cached; returns the cached file's path.

    ``dynamic=True`` leaves the entry's dynamic dims symbolic (``batch``, ``seq``, ``height``, ``width``);
    ``dynamic=False`` fixes every dim at the default shapes of ``size``.

    >>> build_onnx("gpt2", dynamic=True)                          # doctest: +SKIP
    PosixPath('/home/me/.cache/xpuruntime/corpus/gpt2-tiny-dynamic-3f2a....onnx')
    """
    from xpuruntime import _cache

    folder = _cache.private_folder(cache_dir or default_cache_dir(), "corpus")
    entry_name = f"{name}-{_check_size(size)}-{'dynamic' if dynamic else 'fixed'}-{_cache_key(name, size, dynamic, seed)}.onnx"
    with _cache.entry_lock(folder, entry_name):
        if _cache.read_entry(folder, entry_name) is None:
            _cache.write_entry(folder, entry_name, _export(name, size, dynamic, seed))
    return folder / entry_name


def _export(name: str, size: str, dynamic: bool, seed: int) -> bytes:
    import onnx

    torch, transformers = _imports()
    entry, module = _entry(name), build_module(name, size=size, seed=seed)
    feeds = sample_feeds(name, size=size, seed=seed)
    args = tuple(torch.from_numpy(feeds[spec.name]) for spec in entry.inputs)
    axes = {spec.name: {i: d for i, d in enumerate(spec.dims) if d in entry.dynamic_dims} for spec in entry.inputs}
    buffer = io.BytesIO()
    with _quiet(transformers), torch.no_grad():
        torch.onnx.export(module, args, buffer, dynamo=False, opset_version=OPSET,
                          input_names=[s.name for s in entry.inputs], output_names=["last_hidden_state"],
                          dynamic_axes=axes if dynamic else None)
    proto = onnx.load_from_string(buffer.getvalue())
    proto.ir_version = min(proto.ir_version, IR_VERSION)
    proto.producer_name, proto.doc_string = "xpuruntime.corpus", f"{name} ({size}, seed {seed}): {entry.note}"
    return proto.SerializeToString()

