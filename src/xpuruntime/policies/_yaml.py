"""YAML for policy files: PyYAML's safe loader, minus aliases, duplicate keys and odd scalars."""

from __future__ import annotations

from typing import Any

import yaml

from xpuruntime.errors import PolicyError

__all__ = ["load", "dump"]


class _StrictLoader(yaml.SafeLoader):
    """Safe loading that also refuses anchors/aliases (no billion-laughs) and duplicate keys."""

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


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(tuple, _represent_list)


def dump(data: Any) -> str:
    """Block-style YAML keeping key order."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=100)
