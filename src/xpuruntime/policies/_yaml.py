"""YAML for policy files: PyYAML's safe loader, minus aliases, duplicate keys and odd scalars.

Plain scalars are read by the YAML 1.2 core schema, not PyYAML's YAML 1.1 rules: ``1:30`` is the string
``'1:30'`` (1.1: the sexagesimal 90), ``010`` is 10 (1.1: octal 8), ``yes``/``on``/``no``/``off`` and
``2024-01-01`` are strings, ``1_000`` is a string. Only the core tags are accepted (``!!binary``,
``!!timestamp``, ``!!set``, ``!!omap``, ``!!pairs``, ``!!merge`` and any other tag are refused), so every
value a policy file holds is one a policy can write back.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import yaml

from xpuruntime.errors import PolicyError

__all__ = ["load", "dump", "CORE_TAGS"]

_T = "tag:yaml.org,2002:"
#: the tags a policy file may hold (implicitly or explicitly): the YAML 1.2 core schema's
CORE_TAGS = frozenset(_T + t for t in ("str", "int", "float", "bool", "null", "seq", "map"))
_CORE = {  # YAML 1.2 core schema, 10.3.2 "Tag Resolution"
    "null": (re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]),
    "bool": (re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")),
    "int": (re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")),
    "float": (re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
                         r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"), list("-+.0123456789")),
}

class _StrictLoader(yaml.SafeLoader):
    """Safe loading that also refuses anchors/aliases (no billion-laughs), duplicate keys and non-core tags,
    and resolves plain scalars by the YAML 1.2 core schema."""

    yaml_implicit_resolvers: ClassVar[dict[Any, Any]] = {}  # filled below: the 1.2 core rules only

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        if node.tag not in CORE_TAGS:
            raise yaml.constructor.ConstructorError(
                None, None, f"the YAML tag {node.tag.replace(_T, '!!')} is not allowed in policy files "
                "(plain values, lists and mappings only)", node.start_mark)
        return super().construct_object(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        text = self.construct_scalar(node)
        if not _CORE["int"][0].match(text):
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a YAML 1.2 integer", node.start_mark)
        base = {"0o": 8, "0x": 16}.get(text[:2], 10)
        return int(text[2:] if base != 10 else text, base)

    def construct_yaml_float(self, node: Any) -> float:
        text = self.construct_scalar(node)
        if not (_CORE["float"][0].match(text) or _CORE["int"][0].match(text)) or text[:2] in ("0o", "0x"):
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a YAML 1.2 float", node.start_mark)
        return float(text.lower().replace(".inf", "inf").replace(".nan", "nan"))

    def construct_yaml_bool(self, node: Any) -> bool:
        text = self.construct_scalar(node)
        if not _CORE["bool"][0].match(text):
            raise yaml.constructor.ConstructorError(None, None, f"{text!r} is not a YAML 1.2 boolean "
                                                    "(true or false)", node.start_mark)
        return text.lower() == "true"

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D401
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases are not allowed in policy files", event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


for _name, (_regex, _first) in _CORE.items():
    _StrictLoader.add_implicit_resolver(_T + _name, _regex, _first)
_StrictLoader.add_constructor(_T + "int", _StrictLoader.construct_yaml_int)
_StrictLoader.add_constructor(_T + "float", _StrictLoader.construct_yaml_float)
_StrictLoader.add_constructor(_T + "bool", _StrictLoader.construct_yaml_bool)


def load(text: str) -> Any:
    """Parse YAML text into plain data, or raise PolicyError with the line and column."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError(f"malformed YAML{where}: {problem}", expected="valid YAML (safe subset, no aliases)",
                          received="invalid YAML") from None
    except RecursionError:  # the parser recurses once per nesting level
        raise PolicyError("malformed YAML: nested too deeply", expected="valid YAML of a few levels",
                          received="deeply nested YAML") from None
    except (ValueError, TypeError) as exc:
        raise PolicyError(f"malformed YAML: {exc}", expected="valid YAML", received="invalid YAML") from None


class _Dumper(yaml.SafeDumper):
    """Block style for mappings, flow style for short lists of scalars (``[flash, efficient]``)."""


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> Any:
    flow = all(not isinstance(v, (dict, list)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_str(dumper: yaml.SafeDumper, data: str) -> Any:
    """NEL and the Unicode line and paragraph separators are line breaks to a YAML reader: with ``allow_unicode``
    they would be written raw and read back as spaces or newlines, so such strings are written escaped."""
    style = '"' if any(c in data for c in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)
for _name, (_regex, _first) in _CORE.items():  # quote a string either YAML 1.1 or 1.2 would read as another type
    _Dumper.add_implicit_resolver(_T + _name, _regex, _first)
_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(tuple, _represent_list)


def dump(data: Any) -> str:
    """Block-style YAML keeping key order."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=100)
