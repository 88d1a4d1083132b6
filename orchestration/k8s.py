"""Kubernetes launches: which executor the code location uses, and what each step asks the cluster for.

Production runs are launched by ``K8sRunLauncher`` (infra/dagster/dagster.production.yaml) and,
with ``COSMICMAN_EXECUTOR=k8s``, every step of a run is its own Kubernetes Job
(``dagster_k8s.k8s_job_executor``); without it the default executor runs the steps in the run's
own process(es), as the demo and the tests do. A step's Job carries the ``dagster-k8s/config``
tags of its op: the GPU assets (trainings, evaluation) request one ``nvidia.com/gpu`` and land on
GPU nodes; the CPU-heavy data steps request cores and memory.

This module imports no Kubernetes code at import time: the asset modules import the tag dicts.
"""

import os
from collections.abc import Mapping
from typing import Any

K8S_CONFIG_TAG = "dagster-k8s/config"  # the op tag dagster_k8s reads (get_user_defined_k8s_config)
EXECUTOR_ENV = "COSMICMAN_EXECUTOR"
EXECUTORS = ("default", "k8s")
GPU_RESOURCE = "nvidia.com/gpu"

# GPU nodes: the label NVIDIA's GPU feature discovery sets, and the taint GPU node pools usually carry
_GPU_POD_SPEC = {
    "node_selector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
    # PyTorch data-loader workers share tensors through /dev/shm (64 MiB by default in a container)
    "volumes": [{"name": "dshm", "empty_dir": {"medium": "Memory", "size_limit": "8Gi"}}],
}
_SHM_MOUNT = [{"name": "dshm", "mount_path": "/dev/shm"}]


def _step_config(cpu: str, memory: str, memory_limit: str, gpus: int = 0) -> dict[str, Any]:
    """A ``dagster-k8s/config`` value: container requests/limits (and, with GPUs, GPU placement).

    Extended resources such as ``nvidia.com/gpu`` cannot be overcommitted: request equals limit."""
    requests: dict[str, Any] = {"cpu": cpu, "memory": memory}
    limits: dict[str, Any] = {"memory": memory_limit}
    if gpus:
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(gpus)
    config: dict[str, Any] = {"container_config": {"resources": {"requests": requests, "limits": limits}}}
    if gpus:
        config["container_config"]["volume_mounts"] = _SHM_MOUNT
        config["pod_spec_config"] = _GPU_POD_SPEC
    return config


# One GPU per training step (the accelerator pool still runs one at a time); evaluation generates
# and judges on the GPU too. Data steps: cores for the process pools, memory for decoded images.
GPU_TRAINING = _step_config(cpu="8", memory="32Gi", memory_limit="48Gi", gpus=1)
GPU_EVALUATION = _step_config(cpu="8", memory="24Gi", memory_limit="32Gi", gpus=1)
CPU_DATA = _step_config(cpu="4", memory="8Gi", memory_limit="16Gi")  # filter chain and annotation

GPU_TRAINING_TAGS = {K8S_CONFIG_TAG: GPU_TRAINING}
GPU_EVALUATION_TAGS = {K8S_CONFIG_TAG: GPU_EVALUATION}
CPU_DATA_TAGS = {K8S_CONFIG_TAG: CPU_DATA}

# k8s_job_executor's own config: every step's request travels as its op's tags, so nothing per step here
EXECUTOR_CONFIG: dict[str, Any] = {}


def executor_kind(env: Mapping[str, str] | None = None) -> str:
    """``default`` or ``k8s`` from ``$COSMICMAN_EXECUTOR`` (unset or empty: ``default``)."""
    kind = ((os.environ if env is None else env).get(EXECUTOR_ENV) or "default").strip().lower()
    if kind not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={kind!r}: expected one of {', '.join(EXECUTORS)}")
    return kind


def k8s_executor():
    """``k8s_job_executor`` configured with this project's step config (``EXECUTOR_CONFIG``)."""
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(EXECUTOR_CONFIG, name="k8s")


def selected_executor(env: Mapping[str, str] | None = None):
    """The code location's executor: ``None`` (Dagster's default, multiprocess or in-process) unless
    ``COSMICMAN_EXECUTOR=k8s``, then one Kubernetes Job per step."""
    return k8s_executor() if executor_kind(env) == "k8s" else None
