"""One InferenceSession per device and its receipt: the part of the serving example that needs no server.

A Ray Serve replica (``serve_app.py``) or a PyTriton model holds one :class:`Replica`. Each replica writes its
receipt (the policy hash, the fingerprint, what ran where) to ``receipts/replica-<id>.json`` when it starts,
so a deployment of N replicas leaves N receipts beside the policy file.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import numpy as np

import xpuruntime as xrt
from xpuruntime._io import atomic_write_text

__all__ = ["Replica", "replica_device"]


def replica_device() -> str:
    """``cuda:0`` when this process was given a GPU (Ray and Triton set CUDA_VISIBLE_DEVICES per replica)."""
    from xpuruntime.runtime.devices import get_device_count

    return "cuda:0" if get_device_count("cuda") > 0 else "cpu"


class Replica:
    """A session on this process's device under the policy file, answering JSON-able requests.

    >>> r = Replica("model.onnx", "policy.yaml", receipts="receipts", name="0")   # doctest: +SKIP
    >>> r({"x": [[0.0] * 64] * 4})["y"][0][:2]                                    # doctest: +SKIP
    """

    def __init__(self, model: Any, policy: str | os.PathLike[str], *, receipts: str | os.PathLike[str] | None = None,
                 name: str | None = None, device: str | None = None) -> None:
        self.device = device or replica_device()
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.session = xrt.InferenceSession(model, device=self.device, policy=policy)
        self.session.run(self._zeros())  # the first run fills the receipt with what actually ran
        self.receipt_path = self._save(Path(receipts)) if receipts is not None else None

    def _zeros(self) -> dict[str, np.ndarray]:
        feeds = {}
        for info in self.session.input_info:
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in (info.shape or (1,))]
            feeds[info.name] = np.zeros(shape, dtype=info.dtype)
        return feeds

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        feeds = {info.name: np.asarray(inputs[info.name], dtype=info.dtype) for info in self.session.input_info
                 if info.name in inputs}
        outputs = self.session.run(feeds)
        return {name: np.asarray(value).tolist() for name, value in outputs.items()}

    def receipt(self) -> dict[str, Any]:
        """This replica's receipt: who, where, the policy hash and the session's ExecutionReport."""
        report = self.session.report
        return {"replica": self.name, "device": self.device, "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "policy_hash": self.session.policy.hash, "honored": report.honored, "report": report.to_dict()}

    def _save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(folder / f"replica-{self.name}.json", json.dumps(self.receipt(), indent=1,
                                                                                   default=str) + "\n")
