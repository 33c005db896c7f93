"""The error tree: one root, a shallow hierarchy, and messages that say how to fix things.

Every error carries what was expected, what was received and a hint, so a user reading
only the message knows what to change::

    >>> raise PolicyError("unknown precision", expected="one of fp32, tf32, fp16, bf16, int8",
    ...                   received="'fp61'", hint="did you mean 'fp16'?")
"""

from __future__ import annotations

import difflib
import reprlib
from collections.abc import Iterable

__all__ = [
    "PolicyViolationWarning",
    "XpuRuntimeError",
    "CudaError",
    "OutOfMemoryError",
    "UnsupportedOperationError",
    "PolicyError",
    "PolicyViolationError",
    "LockDriftError",
    "ModelLoadError",
    "InputError",
    "DeviceError",
    "EngineUnavailableError",
    "ExecutionTimeoutError",
    "closest",
    "did_you_mean",
    "safe_text",
    "short_repr",
]


class XpuRuntimeError(Exception):
    """Root of every error xpuruntime raises on purpose.

    ``expected``, ``received`` and ``hint`` are kept as attributes and appended to the
    message, one per line, so logs and tracebacks show the whole story.
    """

    def __init__(
        self,
        message: str,
        *,
        expected: str | None = None,
        received: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = message
        self.expected = expected
        self.received = received
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        lines = [self.reason]
        lines += [f"  expected: {self.expected}"] if self.expected else []
        lines += [f"  received: {self.received}"] if self.received else []
        lines += [f"  fix: {self.hint}"] if self.hint else []
        return "\n".join(lines)


class CudaError(XpuRuntimeError, RuntimeError):
    """A CUDA driver or runtime call failed."""


class OutOfMemoryError(CudaError, MemoryError):
    """A device ran out of memory."""


class UnsupportedOperationError(XpuRuntimeError, NotImplementedError):
    """The operation exists but this engine, device or build cannot perform it."""


class PolicyError(XpuRuntimeError, ValueError):
    """A policy (object or file) is malformed; the message names the file and field path.

    ``field`` is a dotted path such as ``kernels.matmul.rules[0].when.k``; ``file`` the
    policy file it came from, when there was one.
    """

    def __init__(self, message: str, *, field: str | None = None, file: str | None = None, **kw: str | None):
        self.field = field
        self.file = file
        where = ": ".join(p for p in (file, field) if p)
        super().__init__(f"{where}: {message}" if where else message, **kw)
        self.reason = message  # the bare message, without the location

    def located(self, *, field_prefix: str | None = None, file: str | None = None) -> PolicyError:
        """A copy of this error with a field-path prefix and/or a file name added."""
        field = ".".join(p for p in (field_prefix, self.field) if p) or None
        return type(self)(self.reason, field=field, file=file or self.file,
                          expected=self.expected, received=self.received, hint=self.hint)


class PolicyViolationError(XpuRuntimeError):
    """A valid policy was not honoured by the engine and ``fallback="error"`` was asked for.

    ``violations`` holds the individual findings (for example one per node).
    """

    def __init__(self, message: str, *, violations: Iterable[object] = (), **kwargs: str | None) -> None:
        self.violations = list(violations)
        super().__init__(message, **kwargs)


class LockDriftError(PolicyViolationError):
    """A lock file was tuned on another environment and ``fallback="error"`` refuses it.

    ``changes`` lists the fields that differ (``FieldChange``: path, locked value, value here).
    """

    def __init__(self, message: str, *, changes: Iterable[object] = (), **kwargs: str | None) -> None:
        self.changes = list(changes)
        super().__init__(message, violations=self.changes, **kwargs)


class ModelLoadError(XpuRuntimeError):
    """A model could not be read or parsed by the engine."""


class InputError(XpuRuntimeError, ValueError):
    """Feeds do not match what the model expects (names, ranks, shapes, dtypes)."""


class DeviceError(XpuRuntimeError):
    """A device string is malformed or names a device that is not present."""


class EngineUnavailableError(XpuRuntimeError, ImportError):
    """An engine or provider is not installed or cannot start; the message names the extra."""


class PolicyViolationWarning(UserWarning):
    """Emitted under ``fallback="warn"`` when an engine, the dispatcher or a lock did not honour the policy."""


class ExecutionTimeoutError(XpuRuntimeError, TimeoutError):
    """A run or a compilation passed ``execution_timeout_ms`` / ``compile_timeout_ms``."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest valid spelling of ``name`` among ``choices``, or None."""
    lowered = {c.lower(): c for c in choices}
    hit = difflib.get_close_matches(str(name).lower(), list(lowered), n=1, cutoff=0.5)
    return lowered[hit[0]] if hit else None


def did_you_mean(name: str, choices: Iterable[str]) -> str | None:
    """A hint sentence such as ``did you mean 'flash'?`` or None when nothing is close."""
    guess = closest(name, choices)
    return f"did you mean {guess!r}?" if guess else None


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 120
_SHORT.maxlevel = 4


def short_repr(value: object) -> str:
    """``repr`` bounded for messages: long strings and lists are cut, deep nesting is elided, and values
    whose repr fails (an integer of 10,000 digits, a broken ``__repr__``) are described instead."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<an integer of {value.bit_length()} bits>"
    try:
        return _SHORT.repr(value)
    except Exception:  # noqa: BLE001 - a message must never fail to build
        return f"<{type(value).__name__}>"


# C0 and C1 controls, DEL, line/paragraph separators and the bidirectional overrides (a name can reorder a line)
_UNSAFE = frozenset([*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029, *range(0x202A, 0x202F),
                     *range(0x2066, 0x206A), 0x061C, 0x200E, 0x200F])


def safe_text(text: object, *, newlines: bool = False) -> str:
    """``text`` with every control character escaped, for a terminal: ESC, OSC and CSI sequences, carriage
    returns, bidirectional overrides and NUL print as ``\\x1b``, ``\\u202e`` ... and do nothing.

    ``newlines=True`` keeps ``\\n`` and ``\\t`` (multi-line messages). Used wherever the CLI and the receipt
    renderers print model-provided text (node, input and output names, engine messages).

    >>> safe_text("relu\\x1b]0;pwned\\x07")
    'relu\\\\x1b]0;pwned\\\\x07'
    """
    text = text if isinstance(text, str) else str(text)
    if not any(ord(c) in _UNSAFE for c in text):
        return text
    keep = "\n\t" if newlines else ""
    return "".join(c if ord(c) not in _UNSAFE or c in keep else _escape(c) for c in text)


def _escape(c: str) -> str:
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
