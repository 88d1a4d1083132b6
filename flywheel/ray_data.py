"""The Ray engine: per-image stages as Ray Data pipelines.

A stage names a callable class that builds its models once (in ``__init__``, once per actor)
and maps a batch of content keys to JSON results; ``map_keys`` runs it over an actor pool,
streaming results back in order, as NeMo Curator and img2dataset do at scale. The local
engine (process pools, ``flywheel.parallel``) stays the default; both give the same results.

Traps met on a two-core machine, and what this module does about them:
- an actor pool as large as the CPU count leaves no CPU for Ray Data's own read and
  output tasks and the pipeline hangs: a local Ray gets one logical CPU more than it has actors;
- a local Ray binds to the loopback address, never the machine's network address;
- the driver's settings reach the workers through ``runtime_env`` (``COSMICMAN_*`` variables),
  never through the worker's own environment;
- Ray is stopped with ``ray.shutdown()`` from the process that started it, never by process name
  (that would kill another session's cluster).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field


class EngineSettings(BaseModel):
    """Where the per-image stages run."""

    kind: Literal["local", "ray"] = Field("local", description="local: process pools on this machine; ray: Ray Data "
                                          "actors on a local Ray or the cluster at ray_address (the filter chain's "
                                          "analyses, the annotation pool's parsing and views, and the annotator "
                                          "labelling the pool)")
    ray_address: str | None = Field(None, description="a running cluster ('auto', 'ray://head:10001', or host:port); "
                                    "None: $RAY_ADDRESS if set, else a Ray started for the run on loopback")
    ray_runtime_env: dict[str, Any] = Field(default_factory=dict, description="extra Ray runtime_env for the workers "
                                            "(e.g. working_dir, pip) on a cluster whose image lacks the project")
    batch_size: int = Field(16, ge=1, description="images per actor call")


def runtime_env(settings: EngineSettings) -> dict[str, Any]:
    """The workers' runtime environment: this process's COSMICMAN_* settings plus the configured extras."""
    env = dict(settings.ray_runtime_env)
    env_vars = {k: v for k, v in os.environ.items() if k.startswith("COSMICMAN_")}
    env["env_vars"] = {**env_vars, **env.get("env_vars", {})}
    return env


def init_options(settings: EngineSettings, workers: int) -> dict[str, Any]:
    """``ray.init`` arguments: a cluster address, or a local Ray on loopback sized for ``workers`` actors."""
    address = settings.ray_address or os.environ.get("RAY_ADDRESS")
    options: dict[str, Any] = {"runtime_env": runtime_env(settings), "log_to_driver": False, "include_dashboard": False}
    if address:
        return {**options, "address": address}
    return {**options, "num_cpus": workers + 1, "_node_ip_address": "127.0.0.1"}


def ensure_ray(settings: EngineSettings, workers: int) -> bool:
    """Connect to (or start) Ray unless this process already is; True when this call started it."""
    import ray

    if ray.is_initialized():  # e.g. dagster-ray's resource connected the step already
        return False
    ray.init(**init_options(settings, workers))
    return True


def map_keys(keys: Sequence[str], actor: type, actor_args: tuple, settings: EngineSettings, workers: int,
             progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[str, dict]]:
    """``actor(*actor_args)(batch)`` over ``keys`` on ``workers`` Ray actors; yields ``(key, result)`` in key order.
    The actor reads ``batch["key"]`` and returns :func:`json_batch`."""
    for row in _map([{"key": k} for k in keys], actor, actor_args, settings, workers, progress):
        yield str(row["key"]), json.loads(row["result"])


def map_items(items: Sequence[tuple[str, dict]], actor: type, actor_args: tuple, settings: EngineSettings, workers: int,
              progress: Callable[[int, int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Like :func:`map_keys` for ``(key, item)`` pairs: the actor reads JSON items from ``batch["item"]`` and
    returns a ``key`` column plus any others (arrays of any shape travel as tensors); yields the output rows in order."""
    yield from _map([{"key": k, "item": json.dumps(item)} for k, item in items], actor, actor_args, settings, workers,
                    progress)


def map_arrays(columns: dict[str, Any], actor: type, actor_args: tuple, settings: EngineSettings, workers: int,
               progress: Callable[[int, int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Like :func:`map_items` for arrays that already exist (e.g. the annotator's views): row ``i`` of every
    column travels as a tensor column beside ``key`` ``str(i)``; yields the output rows in order."""
    n = len(next(iter(columns.values()))) if columns else 0
    yield from _map([{"key": str(i), **{c: a[i] for c, a in columns.items()}} for i in range(n)], actor, actor_args,
                    settings, workers, progress)


def _map(ray_items: list[dict], actor: type, actor_args: tuple, settings: EngineSettings, workers: int,
         progress: Callable[[int, int], None] | None = None) -> Iterator[dict[str, Any]]:
    import ray
    import ray.data

    started = ensure_ray(settings, workers)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = True  # results in input order, like the local engine
        n = len(ray_items)
        ds = ray.data.from_items(ray_items, override_num_blocks=max(1, min(n, 4 * workers)))
        out = ds.map_batches(actor, fn_constructor_args=actor_args, batch_size=settings.batch_size, batch_format="numpy",
                             compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
        for i, row in enumerate(out.iter_rows()):
            yield {**row, "key": str(row["key"])}
            if progress:
                progress(i + 1, n)
    finally:
        if started:
            ray.shutdown()


def json_batch(keys, results: list[dict]) -> dict[str, Any]:
    """A Ray Data batch of keys and JSON results (nested, ragged results travel as strings)."""
    import numpy as np

    return {"key": np.asarray(list(keys), dtype=object), "result": np.asarray([json.dumps(r) for r in results], dtype=object)}
