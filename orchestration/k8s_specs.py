"""The Kubernetes Jobs production would submit, built offline and validated against the API schema.

For every job of the code location this builds the run-worker Job that ``K8sRunLauncher`` submits,
and for every step of every job the step-worker Job that ``k8s_job_executor`` submits, with
dagster_k8s's own builders (``K8sContainerContext``, ``DagsterK8sJobConfig``,
``get_user_defined_k8s_config``, ``construct_dagster_k8s_job``) fed exactly as
``dagster_k8s/launcher.py`` (``_launch_k8s_job_with_args``) and ``dagster_k8s/executor.py``
(``k8s_job_executor``, ``K8sStepHandler._get_container_context`` and ``launch_step``) feed them
in dagster-k8s 0.29.27. The run launcher is the real ``K8sRunLauncher``, made from the production
instance config; only its client setup differs: it reads a throwaway kubeconfig whose server,
``https://kubernetes.invalid``, cannot resolve, and nothing here calls the Kubernetes API.

Specs are serialized with the kubernetes client's ``ApiClient().sanitize_for_serialization`` and
checked with ``kubernetes_validate`` (strict: unknown fields are errors).
"""

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION_INSTANCE = ROOT / "infra" / "dagster" / "dagster.production.yaml"
K8S_VERSION = "1.30.0"  # a version kubernetes-validate ships schemas for
DAGSTER_K8S_VERSION = "0.29.27"  # the dagster_k8s whose launcher/executor this module mirrors
CODE_MODULE, CODE_ATTR = "orchestration.definitions", "defs"
IMAGE = "registry.example/cosmicman-flywheel:latest"  # the code location's image in a deployment
RUN_ID = "0c05d1ab-6e2d-4c1e-9b1a-5f0c0ffee000"  # a fixed run id: names and labels are reproducible
_DUMMY_ENV = {"PORT": "5432"}  # env vars ending so must parse as integers

_KUBECONFIG = {
    "apiVersion": "v1", "kind": "Config", "current-context": "offline",
    "clusters": [{"name": "offline", "cluster": {"server": "https://kubernetes.invalid"}}],
    "users": [{"name": "offline", "user": {"token": "unused"}}],
    "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}],
}


@dataclass(frozen=True)
class JobSpec:
    """One Kubernetes Job: who submits it (``run_worker`` or ``step_worker``), for which Dagster
    job and step, and the Job as a plain JSON document."""
    component: str
    dagster_job: str
    step_key: str | None
    manifest: dict

    @property
    def label(self) -> str:
        return f"{self.component} {self.dagster_job}" + (f" / {self.step_key}" if self.step_key else "")

    @property
    def container(self) -> dict:
        return self.manifest["spec"]["template"]["spec"]["containers"][0]

    @property
    def pod_spec(self) -> dict:
        return self.manifest["spec"]["template"]["spec"]


def env_references(node: Any) -> set[str]:
    """Every ``{env: NAME}`` in a Dagster config document."""
    if isinstance(node, Mapping):
        if set(node) == {"env"} and isinstance(node["env"], str):
            return {node["env"]}
        return set().union(*(env_references(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(env_references(v) for v in node)) if node else set()
    return set()


@contextlib.contextmanager
def dummy_env(names: set[str]) -> Iterator[dict[str, str]]:
    """Set each missing variable to a dummy value while the block runs (restored after)."""
    added = {n: next((v for suffix, v in _DUMMY_ENV.items() if n.endswith(suffix)), f"dummy-{n.lower()}")
             for n in sorted(names) if n not in os.environ}
    os.environ.update(added)
    try:
        yield added
    finally:
        for name in added:
            os.environ.pop(name, None)


def load_instance_config(path: Path = PRODUCTION_INSTANCE) -> dict:
    """The instance config as Dagster reads it: ``dagster_instance_config`` (the instance schema,
    storage and concurrency rules), then ``process_config`` with the same schema so every ``{env: X}``
    resolves (to dummies where unset) and has the right type. Raises on any error."""
    from dagster import Shape
    from dagster._config import process_config
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import (
        dagster_instance_config,
        dagster_instance_config_schema,
    )

    raw = yaml.safe_load(path.read_text())
    dagster_instance_config(str(path.parent), config_filename=path.name)
    with dummy_env(env_references(raw)):
        result = process_config(Shape(dagster_instance_config_schema()), raw)
    if not result.success:
        raise DagsterInvalidConfigError(f"{path}: env-resolved instance config is invalid", result.errors, raw)
    return raw


@contextlib.contextmanager
def _offline_kubeconfig() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="k8s-offline-") as tmp:
        path = Path(tmp) / "kubeconfig"
        path.write_text(yaml.safe_dump(_KUBECONFIG))
        yield str(path)


def run_launcher_from_config(instance_config: Mapping[str, Any]):
    """The ``K8sRunLauncher`` the instance config names, its config processed by the launcher's own
    schema (defaults filled in, env resolved); kube config from the offline kubeconfig."""
    import kubernetes.client
    from dagster._config import process_config
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._serdes.config_class import class_from_code_pointer
    from dagster_k8s import K8sRunLauncher

    section = instance_config["run_launcher"]
    cls = class_from_code_pointer(section["module"], section["class"])
    if not issubclass(cls, K8sRunLauncher):
        raise TypeError(f"run_launcher is {section['module']}.{section['class']}, not a K8sRunLauncher")
    config = section.get("config") or {}
    with dummy_env(env_references(config)):
        result = process_config(cls.config_type(), config)
    if not result.success:
        raise DagsterInvalidConfigError("run_launcher config", result.errors, config)
    value = {**result.value, "load_incluster_config": False}
    # loading a kubeconfig sets the client's process-wide default; the launcher's clients keep the
    # offline server, the default is put back
    saved = kubernetes.client.Configuration.get_default_copy()
    try:
        with _offline_kubeconfig() as kubeconfig:
            return cls.from_config_value(None, {**value, "kubeconfig_file": kubeconfig})
    finally:
        kubernetes.client.Configuration.set_default(saved)


def executor_config() -> dict:
    """``EXECUTOR_CONFIG`` as ``k8s_job_executor`` receives it (its schema's defaults filled in)."""
    from dagster._config import process_config
    from dagster_k8s import k8s_job_executor

    from orchestration.k8s import EXECUTOR_CONFIG

    result = process_config(k8s_job_executor.config_schema.config_type, EXECUTOR_CONFIG)
    if not result.success:
        raise ValueError(f"EXECUTOR_CONFIG: {[e.message for e in result.errors]}")
    return result.value


def _executor_container_context(exc_cfg: Mapping[str, Any]):
    # as dagster_k8s.executor.k8s_job_executor builds it
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import UserDefinedDagsterK8sConfig

    return K8sContainerContext(
        image_pull_policy=exc_cfg.get("image_pull_policy"), image_pull_secrets=exc_cfg.get("image_pull_secrets"),
        service_account_name=exc_cfg.get("service_account_name"), env_config_maps=exc_cfg.get("env_config_maps"),
        env_secrets=exc_cfg.get("env_secrets"), env_vars=exc_cfg.get("env_vars"),
        volume_mounts=exc_cfg.get("volume_mounts"), volumes=exc_cfg.get("volumes"), labels=exc_cfg.get("labels"),
        namespace=exc_cfg.get("job_namespace"), resources=exc_cfg.get("resources"),
        scheduler_name=exc_cfg.get("scheduler_name"), security_context=exc_cfg.get("security_context"),
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(exc_cfg.get("step_k8s_config", {})),
    )


def _run(job_def, image: str):
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.storage.dagster_run import DagsterRun

    repo = ReconstructableRepository.for_module(CODE_MODULE, CODE_ATTR, container_image=image)
    origin = repo.get_reconstructable_job(job_def.name).get_python_origin()
    return DagsterRun(job_name=job_def.name, run_id=RUN_ID, tags=dict(job_def.run_tags), job_code_origin=origin)


def instance_ref(launcher, instance_path: Path = PRODUCTION_INSTANCE):
    """The ref a production instance (DAGSTER_HOME = the launcher's ``dagster_home``, config from
    ``instance_path``) hands to its runs and steps; building it connects to nothing."""
    from dagster._core.instance.ref import InstanceRef

    return InstanceRef.from_dir(launcher.dagster_home, config_dir=str(instance_path.parent),
                                config_filename=instance_path.name)


def run_worker_job(launcher, run, ref=None):
    """What ``K8sRunLauncher.launch_run`` submits for ``run`` (``_launch_k8s_job_with_args``)."""
    from dagster._cli.api import ExecuteRunArgs
    from dagster_k8s.job import construct_dagster_k8s_job, get_job_name_from_run_id
    from dagster_k8s.utils import get_deployment_id_label

    job_name = get_job_name_from_run_id(run.run_id)
    origin = run.job_code_origin
    args = ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=ref,
                          set_exit_code_on_failure=launcher.fail_pod_on_run_failure).get_command_args()
    container_context = launcher.get_container_context_for_run(run)
    user_defined = container_context.run_k8s_config
    job_config = container_context.get_k8s_job_config(job_image=origin.repository_origin.container_image,
                                                      run_launcher=launcher)
    labels = {"dagster/job": origin.job_name, "dagster/run-id": run.run_id}
    if deployment := get_deployment_id_label(user_defined):
        labels["dagster/deployment-name"] = deployment
    return construct_dagster_k8s_job(
        job_config=job_config, args=args, job_name=job_name, pod_name=job_name, component="run_worker",
        user_defined_k8s_config=user_defined, labels=labels,
        env_vars=[{"name": "DAGSTER_RUN_JOB_NAME", "value": origin.job_name}])


def step_worker_job(launcher, exc_cfg: Mapping[str, Any], run, step_key: str, op_name: str,
                    step_tags: Mapping[str, str], ref=None):
    """What ``K8sStepHandler.launch_step`` submits for one step of ``run`` (first attempt)."""
    from dagster._grpc.types import ExecuteStepArgs
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
        get_k8s_job_name,
        get_user_defined_k8s_config,
    )
    from dagster_k8s.utils import get_deployment_id_label

    # K8sStepHandler._get_container_context
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=False)
    context = context.merge(_executor_container_context(exc_cfg))
    per_op = UserDefinedDagsterK8sConfig.from_dict(exc_cfg.get("per_step_k8s_config", {}).get(op_name, {}))
    context = context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(step_tags))).merge(
        K8sContainerContext(run_k8s_config=per_op))

    # K8sStepHandler.launch_step
    job_name = f"dagster-step-{get_k8s_job_name(run.run_id, step_key)}"
    job_config = context.get_k8s_job_config(exc_cfg.get("job_image"), launcher)
    step_args = ExecuteStepArgs(job_origin=run.job_code_origin, run_id=run.run_id, step_keys_to_execute=[step_key],
                                instance_ref=ref, should_verify_step=True)
    if not job_config.job_image:
        job_config = job_config.with_image(run.job_code_origin.repository_origin.container_image)
    if not job_config.job_image:
        raise ValueError("No image included in either executor config or the job")
    labels = {"dagster/job": run.job_name, "dagster/op": step_key, "dagster/run-id": run.run_id}
    if deployment := get_deployment_id_label(context.run_k8s_config):
        labels["dagster/deployment-name"] = deployment
    return construct_dagster_k8s_job(
        job_config=job_config, args=step_args.get_command_args(skip_serialized_namedtuple=True), job_name=job_name,
        pod_name=job_name, component="step_worker", user_defined_k8s_config=context.run_k8s_config, labels=labels,
        env_vars=[*step_args.get_command_env(), {"name": "DAGSTER_RUN_JOB_NAME", "value": run.job_name},
                  {"name": "DAGSTER_RUN_STEP_KEY", "value": step_key}])


def to_document(job) -> dict:
    """A ``V1Job`` as the JSON the API server would receive."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(job)


def build_job_specs(defs=None, instance_path: Path = PRODUCTION_INSTANCE, image: str = IMAGE) -> list[JobSpec]:
    """Every Job production would submit for ``defs``: a run worker per job, a step worker per
    step of each job's execution plan (assets and asset checks)."""
    from dagster._core.execution.api import create_execution_plan

    if defs is None:
        from orchestration.definitions import defs
    launcher = run_launcher_from_config(load_instance_config(instance_path))
    exc_cfg = executor_config()
    ref = instance_ref(launcher, instance_path)
    specs = []
    for job_def in sorted(defs.resolve_all_job_defs(), key=lambda j: j.name):
        run = _run(job_def, image)
        specs.append(JobSpec("run_worker", job_def.name, None, to_document(run_worker_job(launcher, run, ref))))
        for step in create_execution_plan(job_def).get_all_steps_in_topo_order():
            job = step_worker_job(launcher, exc_cfg, run, step.key, step.node_handle.name, step.tags, ref)
            specs.append(JobSpec("step_worker", job_def.name, step.key, to_document(job)))
    return specs


def validate(document: Mapping[str, Any], version: str = K8S_VERSION) -> None:
    """Strict schema validation of one manifest; raises ``kubernetes_validate.ValidationError``."""
    import kubernetes_validate

    kubernetes_validate.validate(dict(document), version, strict=True)


def requests_gpu(spec: JobSpec) -> bool:
    from orchestration.k8s import GPU_RESOURCE

    resources = spec.container.get("resources") or {}
    return any(GPU_RESOURCE in (resources.get(part) or {}) for part in ("requests", "limits"))
