"""ExecutionPolicy: precision, shapes, determinism, graphs, threads, caching and fallback."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from xpuruntime.errors import PolicyError, did_you_mean, short_repr
from xpuruntime.policies import vocabulary as vocab
from xpuruntime.policies._common import MAX_INT, Change, check_plain_data, content_hash, diff_dicts

__all__ = ["ExecutionPolicy", "AccuracyContract", "Fallback", "Precision", "Compile", "Fusions", "policy_error_from_validation"]

Precision = Literal[tuple(vocab.PRECISIONS)]  # type: ignore[valid-type]  # fp32, tf32, fp16, bf16, int8
Fallback = Literal[vocab.FALLBACKS]  # type: ignore[valid-type]  # error, warn, allow
Compile = Literal[vocab.COMPILE_MODES]  # type: ignore[valid-type]  # off, default, reduce-overhead, max-autotune
Fusions = Literal[vocab.FUSIONS]  # type: ignore[valid-type]  # off, auto, bert, gpt2, vit
_DAY_MS = 24 * 3600 * 1000


class AccuracyContract(BaseModel):
    """How close a session's outputs must be to a reference run: ``|out - ref| <= atol + rtol * |ref|``.

    ``reference``: ``"fp32"`` (the same engine at IEEE float32, compile and fusions off) or an engine name.

    >>> AccuracyContract(rtol=1e-2, atol=1e-3).reference
    'fp32'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rtol: float = Field(..., ge=0, allow_inf_nan=False, description="relative tolerance (>= 0)")
    atol: float = Field(..., ge=0, allow_inf_nan=False, description="absolute tolerance (>= 0)")
    reference: str = Field("fp32", min_length=1, description="'fp32' (same engine, IEEE float32) or an engine name")

    @field_validator("reference", mode="before")
    @classmethod
    def _reference(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v


class ExecutionPolicy(BaseModel):
    """How a model should execute, independent of the engine.

    Immutable: ``with_precision()``, ``with_fallback()`` and ``replace()`` return copies.

    >>> ExecutionPolicy(precision="bfloat16", fallback="error").precision
    'bf16'
    >>> ExecutionPolicy(precision="int8", static_shape=True).with_fallback("allow").static_shape
    True
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    precision: Precision = Field("fp32", description="fp32 (IEEE, no TF32), tf32, fp16, bf16 or int8")
    static_shape: StrictBool = Field(False, description="compile for fixed shapes (from fixed_shapes or the model)")
    fixed_shapes: dict[str, tuple[StrictInt, ...]] | None = Field(None, description="input name -> static shape")
    fallback: Fallback = Field(vocab.DEFAULT_FALLBACK, description="what to do when the engine cannot honour the policy")
    deterministic: StrictBool = Field(False, description="ask for deterministic kernels")
    cuda_graphs: StrictBool = Field(False, description="capture and replay CUDA graphs (needs static shapes)")
    optimize_level: StrictInt = Field(3, ge=0, le=3, description="graph optimisation level, 0 (none) .. 3 (all)")
    num_threads: StrictInt | None = Field(None, ge=1, le=4096, description="CPU threads; None means the engine's")
    cache_dir: str | None = Field(None, min_length=1, description="folder for compiled engines and caches")
    compile_timeout_ms: StrictInt | None = Field(None, gt=0, le=_DAY_MS, description="limit on model compilation")
    execution_timeout_ms: StrictInt | None = Field(None, gt=0, le=_DAY_MS, description="limit on one run")
    compile: Compile = Field("off", description="compile the model with the engine's compiler: off, default, "
                             "reduce-overhead or max-autotune (torch.compile modes; engines without one refuse it)")
    fusions: Fusions = Field("off", description="rewrite the graph with fused transformer ops: off, auto (detect), "
                             "bert, gpt2 or vit (ONNX Runtime's transformers optimizer)")
    accuracy: AccuracyContract | None = Field(None, description="{rtol, atol, reference}: outputs checked against "
                                              "a reference run at session creation")

    def __init__(self, **data: Any) -> None:
        check_plain_data(data, "execution")
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise policy_error_from_validation(exc, "execution") from None

    # -- validation ----------------------------------------------------------------------
    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, v: object) -> str:
        return vocab.canonical_precision(v)

    @field_validator("fallback", mode="before")
    @classmethod
    def _fallback(cls, v: object) -> object:
        choices = vocab.FALLBACKS
        if isinstance(v, str) and v.strip().lower() in choices:
            return v.strip().lower()
        raise PolicyError(f"unknown fallback {short_repr(v)}", expected=f"one of {', '.join(choices)}",
                          received=short_repr(v), hint=did_you_mean(str(v), choices))

    @field_validator("compile", "fusions", mode="before")
    @classmethod
    def _choice(cls, v: object, info: Any) -> object:
        choices = vocab.COMPILE_MODES if info.field_name == "compile" else vocab.FUSIONS
        if v is False or v is None:
            return "off"
        text = v.strip().lower().replace("_", "-") if isinstance(v, str) else v
        if text in choices:
            return text
        raise PolicyError(f"unknown {info.field_name} value {short_repr(v)}", expected=f"one of {', '.join(choices)}",
                          received=short_repr(v), hint=did_you_mean(str(v), choices))

    @field_validator("cache_dir", mode="before")
    @classmethod
    def _cache_dir(cls, v: object) -> object:
        v = os.fspath(v) if isinstance(v, os.PathLike) else v
        if isinstance(v, (bytes, bytearray)):  # pydantic would decode them; a policy file cannot write them back
            raise ValueError("cache_dir must be text, not bytes (a YAML !!binary value, say)")
        if isinstance(v, str) and "\x00" in v:
            raise ValueError("a folder name cannot contain a NUL character")
        return v

    @field_validator("fixed_shapes")
    @classmethod
    def _shapes(cls, v: dict[str, tuple[int, ...]] | None) -> dict[str, tuple[int, ...]] | None:
        for name, shape in (v or {}).items():
            if any(d > MAX_INT for d in shape):
                raise ValueError(f"input {name!r}: a dimension is larger than {MAX_INT}")
            if not name or any(d < 1 for d in shape):
                raise ValueError(f"input {name!r}: every dimension must be >= 1, got {list(shape)}")
        return v or None  # `fixed_shapes: {}` means no fixed shapes: one representation, one hash

    @model_validator(mode="before")
    @classmethod
    def _fixed_implies_static(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and data.get("fixed_shapes") and "static_shape" not in data:
            data = {**data, "static_shape": True}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ExecutionPolicy:
        if self.fixed_shapes and not self.static_shape:
            raise ValueError("fixed_shapes is set but static_shape=False; drop one of them")
        if self.cuda_graphs and not self.static_shape:
            raise ValueError("cuda_graphs=True replays fixed shapes; set static_shape=True as well")
        return self

    # -- copies --------------------------------------------------------------------------
    def replace(self, **changes: Any) -> ExecutionPolicy:
        """A validated copy with ``changes`` applied; fields set before stay set."""
        return type(self)(**{**self.model_dump(include=self.model_fields_set), **changes})

    def with_precision(self, precision: str) -> ExecutionPolicy:
        """A copy with another precision and every other field kept."""
        return self.replace(precision=precision)

    def with_fallback(self, fallback: str) -> ExecutionPolicy:
        """A copy with another fallback rule and every other field kept."""
        return self.replace(fallback=fallback)

    def merge(self, other: ExecutionPolicy | Mapping[str, Any]) -> ExecutionPolicy:
        """A copy where the fields ``other`` sets explicitly win."""
        other = other if isinstance(other, ExecutionPolicy) else ExecutionPolicy.from_dict(other)
        return self.replace(**other.model_dump(include=other.model_fields_set))

    # -- data ----------------------------------------------------------------------------
    def to_dict(self, *, exclude_defaults: bool = False) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_defaults=exclude_defaults)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ExecutionPolicy:
        if data is not None and not isinstance(data, Mapping):
            raise PolicyError("invalid execution policy", field="execution",
                              expected="a mapping of field -> value", received=type(data).__name__)
        for key in data or {}:
            if not isinstance(key, str):  # YAML allows `0: x`; keyword arguments do not
                raise PolicyError(f"unknown field {short_repr(key)}", field=f"execution.{short_repr(key)}",
                                  expected=f"one of {', '.join(cls.model_fields)}", received=short_repr(key))
        return cls(**dict(data or {}))

    @property
    def hash(self) -> str:
        """SHA-256 of the non-default fields: adding a field with a default keeps old hashes."""
        return content_hash({"execution": self.to_dict(exclude_defaults=True)})

    def diff(self, other: ExecutionPolicy) -> list[Change]:
        return diff_dicts(self.to_dict(), other.to_dict(), prefix="execution")

    def save(self, path: str) -> Any:
        """Write a policy file holding this execution section (YAML or JSON by suffix)."""
        from xpuruntime.policies.policy import Policy

        return Policy(execution=self).save(path)

    @classmethod
    def load(cls, path: str) -> ExecutionPolicy:
        """Read the ``execution`` section of a policy file."""
        from xpuruntime.policies.policy import Policy

        return Policy.load(path).execution

    def __repr__(self) -> str:
        changed = self.to_dict(exclude_defaults=True)
        return f"ExecutionPolicy({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    __str__ = __repr__


def policy_error_from_validation(exc: ValidationError, prefix: str) -> PolicyError:
    """The first pydantic error as a PolicyError with a dotted field path and a fix."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    field = ".".join(p for p in (prefix, loc) if p)
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, PolicyError):
        return inner.located(field_prefix=field)
    if err["type"] == "extra_forbidden":
        names = list(ExecutionPolicy.model_fields)
        return PolicyError(f"unknown field {loc!r}", field=field, expected=f"one of {', '.join(names)}",
                           received=short_repr(err["loc"][-1]), hint=did_you_mean(str(err["loc"][-1]), names))
    return PolicyError(_message(err), field=field, expected=_expected(err, loc), received=short_repr(err.get("input")),
                       hint=_yaml_hint(err))


def _yaml_hint(err: Mapping[str, Any]) -> str | None:
    """Text where a number or a boolean belongs is often YAML 1.1 habit (``yes``, ``1:30``, ``1_000``)."""
    if isinstance(err.get("input"), str) and err["type"] in ("int_type", "bool_type", "int_parsing", "bool_parsing"):
        return "policy files are read as YAML 1.2: write integers as plain digits and booleans as true or false"
    return None


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    return msg.removeprefix("Value error, ")


def _expected(err: Mapping[str, Any], loc: str) -> str | None:
    field = ExecutionPolicy.model_fields.get(loc.split(".")[0])
    return field.description if field is not None else None
