"""Ray Serve: one xpuruntime InferenceSession per GPU, the same policy file everywhere, one receipt per replica.

    pip install "ray[serve]" xpuruntime[gpu]
    python examples/ray_serve/serve_app.py model.onnx --policy examples/ray_serve/policy.yaml --replicas 4 --gpus 1
    curl -s localhost:8000/ -d '{"x": [[0.0, 0.0]]}'          # an answer from one of the replicas
    curl -s localhost:8000/receipt                              # the receipt of the replica that answered
    ls receipts/                                                 # replica-<id>.json: one per replica

Ray gives each replica its GPU (``num_gpus=1``: CUDA_VISIBLE_DEVICES holds one device, so the session runs on
``cuda:0``); the replica loads the policy file, builds its session, runs once, and writes its receipt. Ray is
the cluster: xpuruntime adds no scheduler, transport or load balancer of its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from replica import Replica


def build(model: str, policy: str, *, replicas: int, gpus: float, receipts: str) -> Any:
    """The Ray Serve application: ``replicas`` copies of one deployment, each with ``gpus`` GPUs."""
    from ray import serve
    from starlette.requests import Request

    @serve.deployment(num_replicas=replicas, ray_actor_options={"num_gpus": gpus, "num_cpus": 1})
    class Session:
        def __init__(self) -> None:
            context = serve.get_replica_context()
            name = getattr(getattr(context, "replica_id", None), "unique_id", None) or None
            self.replica = Replica(model, policy, receipts=receipts, name=name)

        async def __call__(self, request: Request) -> dict[str, Any]:
            if request.url.path.rstrip("/").endswith("receipt"):
                return self.replica.receipt()
            return self.replica(await request.json())

    return Session.bind()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--policy", default=str(Path(__file__).with_name("policy.yaml")))
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--gpus", type=float, default=1.0, help="GPUs per replica (0 on a CPU machine)")
    parser.add_argument("--receipts", default="receipts")
    parser.add_argument("--once", action="store_true", help="start, wait for every receipt, shut down")
    args = parser.parse_args()
    import ray
    from ray import serve

    ray.init(num_cpus=max(args.replicas + 1, 2), include_dashboard=False)
    serve.run(build(str(Path(args.model).resolve()), str(Path(args.policy).resolve()), replicas=args.replicas,
                    gpus=args.gpus, receipts=str(Path(args.receipts).resolve())))
    print(f"{args.replicas} replica(s) up; receipts in {args.receipts}/", flush=True)
    if args.once:
        serve.shutdown()
        return 0
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    raise SystemExit(main())
