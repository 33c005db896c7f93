"""JSON Schema for policy files, built from the live vocabulary (registered kernels included)."""

from __future__ import annotations

from typing import Any

from xpuruntime.policies import vocabulary as vocab
from xpuruntime.policies.communication import NCCL_SETTINGS, CommunicationPolicy
from xpuruntime.policies.execution import ExecutionPolicy

__all__ = ["policy_json_schema"]

_DIM_CONDITION = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^\s*(>=|<=|==|!=|>|<)?\s*\d+\s*$"},
        {"type": "string", "pattern": r"^\s*\d+\s*\.\.\s*\d+\s*$"},
        {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1},
    ]
}


def _names(canon: list[str], aliases: list[str]) -> list[str]:
    return sorted(set(canon) | set(aliases), key=lambda n: (n not in canon, n))


def _op_schema(op: str) -> dict[str, Any]:
    spec = vocab.get_op(op)
    kernel = {"type": "string", "enum": _names(spec.kernel_names(), [*spec.kernel_aliases, *spec.spellings]),
              "description": spec.description}
    kernels = {"anyOf": [kernel, {"type": "array", "items": kernel, "minItems": 1}]}
    dtype = {"type": "string", "enum": _names(list(vocab.DTYPES), [a for v in vocab.DTYPES.values() for a in v])}
    when = {"type": "object", "minProperties": 1, "additionalProperties": False,
            "properties": {"dtype": {"anyOf": [dtype, {"type": "array", "items": dtype, "minItems": 1}]},
                           **{d: _DIM_CONDITION for d in spec.dims}}}
    params = {"type": "object", "description": "kernel -> its parameters (plain data), e.g. a pinned algorithm",
              "propertyNames": kernel, "additionalProperties": {"type": "object"}}
    rule = {"type": "object", "required": ["when", "use"], "additionalProperties": False,
            "properties": {"when": when, "use": kernels, "params": params}}
    full = {"type": "object", "additionalProperties": False,
            "properties": {"prefer": kernels, "rules": {"type": "array", "items": rule}, "params": params}}
    return {"anyOf": [kernels, full]}


def policy_json_schema() -> dict[str, Any]:
    """The schema as a dict; ``xpuruntime policy schema`` prints it."""
    execution = ExecutionPolicy.model_json_schema()
    execution["properties"]["precision"]["enum"] = _names(
        list(vocab.PRECISIONS), [a for v in vocab.PRECISIONS.values() for a in v])
    execution["properties"]["precision"].pop("type", None)
    ops = {name: _op_schema(name) for name in vocab.list_ops()}
    aliases = {alias: ops[canon] for name in vocab.list_ops() for alias in vocab.get_op(name).aliases
               for canon in [name]}
    communication = CommunicationPolicy.model_json_schema()
    defs = {**execution.pop("$defs", {}), **communication.pop("$defs", {})}
    names = [*NCCL_SETTINGS, *(s.env for s in NCCL_SETTINGS.values())]
    communication["properties"]["nccl"]["propertyNames"] = {"enum": sorted(names)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": defs,
        "title": "xpuruntime policy",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "schema_version": {"type": "integer", "minimum": 1},
            "kernels": {"type": "object", "additionalProperties": False, "properties": {**ops, **aliases}},
            "execution": execution,
            "communication": communication,
        },
    }
