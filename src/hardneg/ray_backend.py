"""``--backend ray``: the same mining, spread over a Ray cluster (a local instance by default).

- **encode**: a pool of Ray actors, each holding one encoder, encodes the cache's length-sorted
  shards; the driver writes each shard atomically as it arrives, so a killed run resumes as locally;
- **search + rule filters**: one Ray task per query shard runs exactly the local code on its rows
  (reading corpus embeddings from the cache folder, which must be shared storage on a multi-node
  cluster); the driver merges the shards, then runs the model judges and the sampler once, so the
  negatives are the local backend's, byte for byte.

Ray tasks and actors are used rather than Ray Data: the work is a handful of coarse, unequal
shards whose outputs are numpy arrays, with no record-level streaming to gain from Ray Data."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError
from .progress import SILENT

if TYPE_CHECKING:
    from .candidates.passes import Part, PassContext
    from .config import BackendSpec


def connect(backend: BackendSpec) -> Any:
    """Start or join Ray: ``ray`` starts a local instance (or joins $RAY_ADDRESS), ``ray:ADDRESS``
    joins an existing cluster (e.g. ``ray:auto`` on a cluster node, ``ray:ray://head:10001``)."""
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ConfigError("--backend ray needs Ray: pip install 'hardneg[ray]'") from e
    if not ray.is_initialized():
        ray.init(address=backend.address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=False)
    return ray


def _workers(ray: Any) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def attach_encoders(backend: BackendSpec, teachers: list[Any]) -> None:
    """Give every dense teacher a shard encoder that runs on a pool of Ray actors."""
    from .candidates.teachers import DenseTeacher

    dense = [t for t in teachers if isinstance(t, DenseTeacher)]
    if not dense:
        return
    ray = connect(backend)

    @ray.remote(num_cpus=1)
    class EncoderActor:
        def __init__(self, teacher: Any) -> None:
            self.teacher = teacher

        def encode(self, n: int, texts: list[str], prompt: str) -> tuple[int, np.ndarray]:
            return n, self.teacher._load().encode(texts, prompt)

    for t in dense:
        actors: list[Any] = []  # started on first use, shared by the documents and the queries

        def factory(prompt: str, t: Any = t, actors: list[Any] = actors) -> Any:
            def encode_shards(work: Iterator[tuple[int, list[str]]]) -> Iterator[tuple[int, np.ndarray]]:
                from ray.util import ActorPool

                items = list(work)
                if not items:
                    return
                if not actors:
                    gpus = ray.cluster_resources().get("GPU", 0) if str(t.device or "cuda").startswith("cuda") else 0
                    # One actor per GPU where the cluster has GPUs (and the teacher may use them), else per CPU.
                    count, opts = (int(gpus), {"num_gpus": 1}) if gpus >= 1 else (_workers(ray), {})
                    actors.extend(EncoderActor.options(**opts)  # type: ignore[attr-defined]
                                  .remote(t) for _ in range(min(len(items), count)))
                pool = ActorPool(actors)
                yield from pool.map_unordered(lambda a, item: a.encode.remote(item[0], item[1], prompt), items)
            return encode_shards
        t.shard_encoder = factory


def rule_parts(ctx: PassContext, rows: np.ndarray, depth: int) -> list[Part]:
    """Search and rule filters for ``rows``, one Ray task per shard of ``passes.QUERY_SHARD`` queries:
    :func:`~hardneg.candidates.passes.rule_part`, the local backend's code."""
    from .candidates.passes import query_shards, rule_part

    ray = connect(ctx.cfg.backend)
    remote_ctx = ray.put(replace(ctx, reporter=SILENT, judge=None, llm=None))
    task = ray.remote(num_cpus=1)(rule_part)
    shards = query_shards(rows)
    with ctx.reporter.task(f"search + filter (ray, {len(shards)} query shards)", len(shards)) as adv:
        refs = [task.remote(remote_ctx, shard, depth) for shard in shards]
        out = []
        for ref in refs:
            out.append(ray.get(ref))
            adv(1)
    return out
