"""``registered_engine``: an engine registered for one ``with`` block, the registry restored after it."""

from __future__ import annotations

import pytest

from xpuruntime.errors import EngineUnavailableError, InputError
from xpuruntime.inference import registered_engine
from xpuruntime.inference.engine import Engine, get_engine_class, list_engines
from xpuruntime.inference.engines.onnxruntime import OnnxRuntimeEngine


class _Scoped(OnnxRuntimeEngine):
    name = "test-scoped"
    aliases = ("test-scoped-alias",)


class _Shadow(OnnxRuntimeEngine):
    name = "onnxruntime"  # shadows the built-in for the block only
    aliases = ("ort",)


def _registry_view() -> list[tuple[str, tuple[str, ...], str]]:
    return [(e.name, e.aliases, e.source) for e in list_engines()]


def test_the_engine_resolves_by_name_and_alias_inside_the_block_only():
    before = _registry_view()
    with registered_engine(_Scoped) as cls:
        assert cls is _Scoped
        assert get_engine_class("test-scoped") is _Scoped and get_engine_class("TEST-SCOPED-ALIAS") is _Scoped
        assert "test-scoped" in [e.name for e in list_engines()]
    assert _registry_view() == before
    for name in ("test-scoped", "test-scoped-alias"):
        with pytest.raises(EngineUnavailableError, match="unknown engine"):
            get_engine_class(name)


def test_a_shadowed_built_in_and_its_aliases_come_back_even_after_an_error():
    before = _registry_view()
    with pytest.raises(RuntimeError, match="inside"):
        with registered_engine(_Shadow):
            assert get_engine_class("onnxruntime") is _Shadow and get_engine_class("ort") is _Shadow
            raise RuntimeError("inside")
    assert get_engine_class("onnxruntime") is OnnxRuntimeEngine and get_engine_class("ort") is OnnxRuntimeEngine
    assert _registry_view() == before


def test_blocks_nest():
    with registered_engine(_Scoped):
        with registered_engine(_Shadow):
            assert get_engine_class("test-scoped") is _Scoped and get_engine_class("onnxruntime") is _Shadow
        assert get_engine_class("onnxruntime") is OnnxRuntimeEngine and get_engine_class("test-scoped") is _Scoped
    with pytest.raises(EngineUnavailableError):
        get_engine_class("test-scoped")


@pytest.mark.parametrize("bad", [object, "onnxruntime", Engine], ids=["not-an-engine", "a-name", "no-name"])
def test_anything_but_an_engine_class_is_refused_with_what_was_expected(bad: object):
    with pytest.raises(InputError, match="an Engine subclass with a name"):
        registered_engine(bad)  # type: ignore[arg-type]
