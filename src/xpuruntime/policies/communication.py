"""CommunicationPolicy: how the ranks of a multi-GPU job talk (backend, NCCL, DDP buckets, FSDP2, reduction).

The ``communication`` section of a policy file. Everything here is translated by
:mod:`xpuruntime.pytorch.distributed`: the backend and NCCL settings into the environment before the process
group starts (NCCL reads its variables once, when a communicator is created), the DDP and FSDP2 settings into
the wrappers' arguments. NCCL settings use the names NCCL documents for users, without the ``NCCL_`` prefix
(``algo`` is ``NCCL_ALGO``); ``NCCL_ALGO`` and ``ALGO`` are accepted spellings.

``reduce_precision_buckets: last`` (DDP only) reduces only the step's last gradient bucket in ``reduce_precision``
(the one ready last, which nothing overlaps: in a GPT with tied embeddings, the embedding's gradient) and the
others in their own dtype: the bytes of the exposed allreduce halve without casting every bucket.

>>> c = CommunicationPolicy(backend="nccl", nccl={"NCCL_ALGO": "ring", "nvls_enable": False},
...                         ddp={"bucket_cap_mb": 100}, reduce_precision="bf16", reduce_precision_buckets="last")
>>> c.nccl
{'algo': 'Ring', 'nvls_enable': False}
>>> CommunicationPolicy().is_default
True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
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
from xpuruntime.policies._common import Change, check_plain_data, content_hash, diff_dicts

__all__ = [
    "NCCL_SETTINGS",
    "Backend",
    "CommunicationPolicy",
    "DDPSettings",
    "FSDPSettings",
    "NcclSetting",
    "ReducePrecision",
    "ReducePrecisionBuckets",
]

Backend = Literal["auto", "nccl", "gloo"]
ReducePrecision = Literal["fp32", "bf16", "fp16"]
ReducePrecisionBuckets = Literal["all", "last"]
_LEVELS = ("LOC", "NVL", "PIX", "PXB", "PHB", "SYS")
_ALGOS = ("Ring", "Tree", "CollnetDirect", "CollnetChain", "NVLS", "NVLSTree", "PAT")
_COLLECTIVES = ("allreduce", "allgather", "reducescatter", "broadcast", "reduce", "sendrecv")
_PROTOS = ("LL", "LL128", "Simple")
_TEXT = re.compile(r"^[\w.,;:^=/+@ -]{1,256}$")  # interface names, HCA lists, paths: no quotes, no newlines


@dataclass(frozen=True)
class NcclSetting:
    """One NCCL environment variable NCCL documents for users: its name, value kind and allowed words."""

    env: str
    kind: Literal["bool", "int", "str", "level", "words"]
    words: tuple[str, ...] = ()
    description: str = ""


def _s(env: str, kind: Any, description: str, words: tuple[str, ...] = ()) -> NcclSetting:
    return NcclSetting(env, kind, words, description)


#: canonical name -> the variable (NCCL user guide, "Environment Variables")
NCCL_SETTINGS: dict[str, NcclSetting] = {
    "socket_ifname": _s("NCCL_SOCKET_IFNAME", "str", "IP interfaces to use (prefixes, ^ excludes, = exact)"),
    "socket_family": _s("NCCL_SOCKET_FAMILY", "words", "IP family of the interfaces", ("AF_INET", "AF_INET6")),
    "socket_nthreads": _s("NCCL_SOCKET_NTHREADS", "int", "CPU helper threads per network connection"),
    "nsocks_perthread": _s("NCCL_NSOCKS_PERTHREAD", "int", "sockets per helper thread"),
    "cross_nic": _s("NCCL_CROSS_NIC", "int", "rings/trees may use different NICs (0, 1, 2)"),
    "ib_disable": _s("NCCL_IB_DISABLE", "bool", "do not use InfiniBand/RoCE"),
    "ib_hca": _s("NCCL_IB_HCA", "str", "InfiniBand adapters (and ports) to use"),
    "ib_timeout": _s("NCCL_IB_TIMEOUT", "int", "InfiniBand verbs timeout (exponent)"),
    "ib_retry_cnt": _s("NCCL_IB_RETRY_CNT", "int", "InfiniBand retry count"),
    "ib_gid_index": _s("NCCL_IB_GID_INDEX", "int", "RoCE global ID index"),
    "ib_sl": _s("NCCL_IB_SL", "int", "InfiniBand service level"),
    "ib_tc": _s("NCCL_IB_TC", "int", "InfiniBand traffic class"),
    "ib_qps_per_connection": _s("NCCL_IB_QPS_PER_CONNECTION", "int", "queue pairs per connection"),
    "net": _s("NCCL_NET", "str", "network module to use (IB, Socket or a plugin's name)"),
    "net_plugin": _s("NCCL_NET_PLUGIN", "str", "network plugin library suffix"),
    "net_gdr_level": _s("NCCL_NET_GDR_LEVEL", "level", "longest path for GPU Direct RDMA", _LEVELS),
    "net_gdr_read": _s("NCCL_NET_GDR_READ", "bool", "send data with GPU Direct RDMA reads"),
    "topo_file": _s("NCCL_TOPO_FILE", "str", "XML topology file read at init"),
    "p2p_level": _s("NCCL_P2P_LEVEL", "level", "longest path for GPU peer-to-peer", _LEVELS),
    "p2p_disable": _s("NCCL_P2P_DISABLE", "bool", "no GPU peer-to-peer (NVLink/PCI) transport"),
    "shm_disable": _s("NCCL_SHM_DISABLE", "bool", "no shared-memory transport"),
    "nvls_enable": _s("NCCL_NVLS_ENABLE", "bool", "NVLink SHARP (multicast) collectives"),
    "cumem_enable": _s("NCCL_CUMEM_ENABLE", "bool", "cuMem* allocations for NCCL buffers"),
    "collnet_enable": _s("NCCL_COLLNET_ENABLE", "bool", "CollNet (in-network reduction)"),
    "buffsize": _s("NCCL_BUFFSIZE", "int", "bytes per channel buffer"),
    "nthreads": _s("NCCL_NTHREADS", "int", "CUDA threads per block (64, 128, 256, 512)"),
    "min_nchannels": _s("NCCL_MIN_NCHANNELS", "int", "fewest channels (CTAs) NCCL may use"),
    "max_nchannels": _s("NCCL_MAX_NCHANNELS", "int", "most channels (CTAs) NCCL may use"),
    "min_ctas": _s("NCCL_MIN_CTAS", "int", "fewest CTAs per collective (NCCL 2.17+; ncclConfig_t.minCTAs)"),
    "max_ctas": _s("NCCL_MAX_CTAS", "int", "most CTAs per collective (NCCL 2.17+; ncclConfig_t.maxCTAs)"),
    "cta_policy": _s("NCCL_CTA_POLICY", "int", "0 default, 1 efficiency (fewest CTAs that keep bandwidth: better "
                     "overlap with compute), 2 zero-CTA (NCCL 2.27+; ncclConfig_t.CTAPolicy)"),
    "algo": _s("NCCL_ALGO", "words", "algorithms NCCL may use (^ excludes; collective:algo lists)",
               (*_ALGOS, *_COLLECTIVES)),
    "proto": _s("NCCL_PROTO", "words", "protocols NCCL may use (^ excludes)", _PROTOS),
    "launch_mode": _s("NCCL_LAUNCH_MODE", "words", "kernel launch mode", ("PARALLEL", "GROUP")),
    "debug": _s("NCCL_DEBUG", "words", "log level", ("VERSION", "WARN", "INFO", "TRACE")),
    "debug_subsys": _s("NCCL_DEBUG_SUBSYS", "str", "subsystems to log (INIT,COLL,P2P,NET,...)"),
    "debug_file": _s("NCCL_DEBUG_FILE", "str", "log file name pattern (%h host, %p pid)"),
}


def _bad(name: str, value: Any, expected: str, hint: str | None = None) -> PolicyError:
    return PolicyError(f"invalid value for {NCCL_SETTINGS[name].env}", field=name, expected=expected,
                       received=short_repr(value), hint=hint)


def _nccl_value(name: str, value: Any) -> bool | int | str:
    kind = NCCL_SETTINGS[name].kind
    if kind == "bool":
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return bool(value)
        raise _bad(name, value, "true or false")
    if kind == "int" or (kind == "level" and isinstance(value, int) and not isinstance(value, bool)):
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**31 - 1:
            return value
        raise _bad(name, value, "a non-negative integer")
    if not isinstance(value, str) or not _TEXT.match(value):
        raise _bad(name, value, "text of letters, digits and , ; : ^ = / . _ - (no quotes or newlines)")
    return _words(name, value) if kind in ("words", "level") else value


def _words(name: str, value: str) -> str:
    allowed = {w.lower(): w for w in NCCL_SETTINGS[name].words}
    out = value.strip()
    for token in filter(None, re.split(r"[,;:^\s]+", value.strip())):
        if token.lower() not in allowed:
            raise _bad(name, token, f"words NCCL knows: {', '.join(allowed.values())}",
                       did_you_mean(token, allowed.values()))
        out = re.sub(rf"(?<![\w]){re.escape(token)}(?![\w])", allowed[token.lower()], out)
    return out


def canonical_nccl_name(key: object) -> str:
    """``NCCL_ALGO``, ``ALGO`` and ``algo`` -> ``algo``; an unknown name raises PolicyError with the closest one."""
    text = str(key).strip()
    name = text.lower().removeprefix("nccl_")
    if name not in NCCL_SETTINGS:
        raise PolicyError(f"unknown NCCL setting {short_repr(key)}", field=f"communication.nccl.{text}",
                          expected="an NCCL variable NCCL documents for users, e.g. algo, proto, socket_ifname",
                          received=short_repr(key), hint=did_you_mean(name, NCCL_SETTINGS))
    return name


class DDPSettings(BaseModel):
    """``DistributedDataParallel`` arguments; None leaves torch's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket_cap_mb: StrictInt | None = Field(None, ge=1, le=4096, description="gradient bucket size in MiB")
    gradient_as_bucket_view: StrictBool | None = Field(None, description="gradients are views into buckets")
    static_graph: StrictBool | None = Field(None, description="the same parameters are used every step")
    broadcast_buffers: StrictBool | None = Field(None, description="broadcast buffers from rank 0 each forward")
    find_unused_parameters: StrictBool | None = Field(None, description="search for parameters with no gradient")


class FSDPSettings(BaseModel):
    """FSDP2 (``fully_shard``) arguments; None leaves torch's default."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reshard_after_forward: StrictBool | StrictInt | None = Field(
        None, description="free gathered parameters after forward (true), keep them (false), or reshard to N ranks")
    prefetch: StrictInt | None = Field(None, ge=0, le=8, description="modules to prefetch ahead in forward and "
                                                                      "backward (None: FSDP2's implicit one)")

    @field_validator("reshard_after_forward")
    @classmethod
    def _group(cls, v: bool | int | None) -> bool | int | None:
        if isinstance(v, int) and not isinstance(v, bool) and v < 2:
            raise ValueError("reshard_after_forward as an integer is a group size >= 2 (use true or false)")
        return v


class CommunicationPolicy(BaseModel):
    """How the ranks of a job communicate, independent of the launcher; immutable, hashed by non-default content.

    >>> CommunicationPolicy(nccl={"proto": "^ll128"}).nccl
    {'proto': '^LL128'}
    """

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    backend: Backend = Field("auto", description="nccl, gloo, or auto (nccl with CUDA, else gloo)")
    timeout_s: StrictInt | None = Field(None, ge=1, le=86400, description="collective timeout of the process group")
    nccl: dict[str, bool | int | str] = Field(default_factory=dict, description="NCCL variables, set before init")
    ddp: DDPSettings = Field(default_factory=DDPSettings, description="DistributedDataParallel arguments")
    fsdp: FSDPSettings = Field(default_factory=FSDPSettings, description="FSDP2 fully_shard arguments")
    reduce_precision: ReducePrecision | None = Field(
        None, description="gradient reduction precision: DDP compression hook, FSDP2 reduce_dtype")
    reduce_precision_buckets: ReducePrecisionBuckets = Field(
        "all", description="DDP gradient buckets reduced in reduce_precision: all, or only the step's last bucket "
                           "(GradBucket.is_last(); the others in their own dtype). Needs reduce_precision bf16 or "
                           "fp16; FSDP2 refuses last")

    def __init__(self, **data: Any) -> None:
        check_plain_data(data, "communication")
        if isinstance(data.get("nccl"), Mapping):
            data["nccl"] = {canonical_nccl_name(k): v for k, v in data["nccl"].items()}
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _error(exc) from None

    @field_validator("backend", "reduce_precision", "reduce_precision_buckets", mode="before")
    @classmethod
    def _lower(cls, v: object) -> object:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("nccl", mode="before")
    @classmethod
    def _nccl(cls, v: object) -> object:
        if not isinstance(v, Mapping):
            return v
        return {name: _nccl_value(name, value) for name, value in sorted(v.items())}

    @model_validator(mode="after")
    def _buckets_need_a_precision(self) -> CommunicationPolicy:
        if self.reduce_precision_buckets != "all" and self.reduce_precision not in ("bf16", "fp16"):
            raise PolicyError(
                f"reduce_precision_buckets={self.reduce_precision_buckets!r} needs a reduced precision",
                field="reduce_precision_buckets", expected="reduce_precision: bf16 or fp16 beside it",
                received=f"reduce_precision: {self.reduce_precision}",
                hint="set reduce_precision: bf16 (or fp16), or drop reduce_precision_buckets")
        return self

    # -- data ----------------------------------------------------------------------------
    @property
    def is_default(self) -> bool:
        """True when nothing is set (the section is then left out of files and hashes)."""
        return not self.to_dict(exclude_defaults=True)

    def to_dict(self, *, exclude_defaults: bool = False) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude_defaults=exclude_defaults)
        if exclude_defaults:
            data = {k: v for k, v in data.items() if v not in ({}, None)}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> CommunicationPolicy:
        if data is not None and not isinstance(data, Mapping):
            raise PolicyError("invalid communication section", field="communication",
                              expected="a mapping of field -> value", received=type(data).__name__)
        for key in data or {}:
            if not isinstance(key, str) or key not in cls.model_fields:
                text = key if isinstance(key, str) else short_repr(key)
                raise PolicyError(f"unknown field {short_repr(key)}", field=f"communication.{text}",
                                  expected=f"one of {', '.join(cls.model_fields)}", received=short_repr(key),
                                  hint=did_you_mean(str(key), cls.model_fields))
        return cls(**dict(data or {}))

    def merge(self, other: CommunicationPolicy) -> CommunicationPolicy:
        """A copy where what ``other`` sets wins (NCCL variables one by one)."""
        mine, theirs = self.to_dict(exclude_defaults=True), other.to_dict(exclude_defaults=True)
        merged = {**mine, **theirs}
        for key in ("nccl", "ddp", "fsdp"):
            if key in mine and key in theirs:
                merged[key] = {**mine[key], **theirs[key]}
        return CommunicationPolicy.from_dict(merged)

    @property
    def hash(self) -> str:
        """SHA-256 of the non-default fields."""
        return content_hash({"communication": self.to_dict(exclude_defaults=True)})

    def diff(self, other: CommunicationPolicy) -> list[Change]:
        return diff_dicts(self.to_dict(), other.to_dict(), prefix="communication")

    def __repr__(self) -> str:
        return f"CommunicationPolicy({', '.join(f'{k}={v!r}' for k, v in self.to_dict(exclude_defaults=True).items())})"

    __str__ = __repr__


def _error(exc: ValidationError) -> PolicyError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    field = f"communication.{loc}" if loc else "communication"
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, PolicyError):
        return inner.located(field_prefix=field)
    if err["type"] == "extra_forbidden":
        return PolicyError(f"unknown field {loc!r}", field=field, received=short_repr(err["loc"][-1]),
                           expected="a field of the communication section (see `xpuruntime policy schema`)")
    return PolicyError(str(err["msg"]).removeprefix("Value error, "), field=field,
                       received=short_repr(err.get("input")))
