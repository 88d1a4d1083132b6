"""Kubernetes launches, offline: the Job specs K8sRunLauncher and k8s_job_executor would submit
for every job and step of the code location, built by dagster_k8s's own builders from the
production instance config and validated strictly against the Kubernetes API schema. No cluster
is reachable; nothing here calls one."""

import copy
import importlib

import dagster_k8s
import dagster_k8s.version
import kubernetes
import kubernetes_validate
import pytest

from orchestration import k8s, k8s_specs
from orchestration.definitions import defs

GPU_ASSETS = {"plain_finetune_checkpoint", "daring_checkpoint", "activation_sweep_checkpoints",
              "adversarial_checkpoint", "evaluation_report", "kosmos_g_checkpoint"}
DATA_ASSETS = {"raw_images", "filtered_pool", "annotation_iteration", "annotated_pool", "cosmicman_hq_snapshot",
               "kosmos_pairs"}
CPU_REQUESTS = {"filtered_pool", "annotation_iteration", "annotated_pool"}


@pytest.fixture(scope="module")
def specs() -> list[k8s_specs.JobSpec]:
    host = kubernetes.client.Configuration.get_default_copy().host
    built = k8s_specs.build_job_specs(defs)
    # the offline kubeconfig does not leak into the process-wide client configuration
    assert kubernetes.client.Configuration.get_default_copy().host == host
    return built


def _steps(specs, job="__ASSET_JOB"):
    return {s.step_key: s for s in specs if s.component == "step_worker" and s.dagster_job == job}


def test_builders_are_the_ones_mirrored():
    # k8s_specs follows dagster_k8s's launcher.py / executor.py line by line; a new dagster-k8s
    # means reading them again
    assert dagster_k8s.version.__version__ == k8s_specs.DAGSTER_K8S_VERSION


def test_every_job_and_asset_has_a_job_spec(specs):
    jobs = {j.name for j in defs.resolve_all_job_defs()}
    assert {s.dagster_job for s in specs if s.component == "run_worker"} == jobs
    assets = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert assets == GPU_ASSETS | DATA_ASSETS
    steps = _steps(specs)
    assert assets <= set(steps)
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys} - {"judge_accuracy"}  # in its asset's op
    assert all(any(key.endswith(c) for key in steps) for c in checks)


def test_every_spec_validates_strictly(specs):
    assert kubernetes_validate.utils.major_minor(k8s_specs.K8S_VERSION) in {
        kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()}
    for spec in specs:
        assert spec.manifest["kind"] == "Job" and spec.manifest["apiVersion"] == "batch/v1"
        k8s_specs.validate(spec.manifest)
        assert len(spec.manifest["metadata"]["name"]) <= 63


def test_production_run_launcher_settings_reach_the_pods(specs):
    for spec in specs:
        assert spec.pod_spec["serviceAccountName"] == "dagster"
        assert spec.pod_spec["restartPolicy"] == "Never"
        refs = spec.container["envFrom"]
        assert {"configMapRef": {"name": "cosmicman-env"}} in refs
        assert {"secretRef": {"name": "cosmicman-secrets"}} in refs
        assert spec.container["image"] == k8s_specs.IMAGE
        assert spec.manifest["metadata"]["labels"]["app.kubernetes.io/component"] == spec.component
    run = next(s for s in specs if s.component == "run_worker")
    assert run.container["args"][:3] == ["dagster", "api", "execute_run"]
    step = _steps(specs)["daring_checkpoint"]
    assert step.container["args"] == ["dagster", "api", "execute_step"]
    env = {e["name"]: e.get("value") for e in step.container["env"]}
    assert env["DAGSTER_RUN_STEP_KEY"] == "daring_checkpoint" and "DAGSTER_COMPRESSED_EXECUTE_STEP_ARGS" in env
    launcher = k8s_specs.run_launcher_from_config(k8s_specs.load_instance_config())
    assert launcher.job_namespace == "cosmicman"


def test_gpu_assets_request_a_gpu_and_data_assets_do_not(specs):
    for job in {s.dagster_job for s in specs}:
        for key, spec in _steps(specs, job).items():
            resources = spec.container.get("resources") or {}
            if key in GPU_ASSETS:
                assert resources["requests"][k8s.GPU_RESOURCE] == resources["limits"][k8s.GPU_RESOURCE] == "1", key
                assert spec.pod_spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
                assert {"key": k8s.GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"} in spec.pod_spec["tolerations"]
                assert {"mountPath": "/dev/shm", "name": "dshm"} in spec.container["volumeMounts"]
                assert resources["requests"]["memory"] and resources["requests"]["cpu"]
            else:
                assert not k8s_specs.requests_gpu(spec), key
                assert "nodeSelector" not in spec.pod_spec and "tolerations" not in spec.pod_spec
            if key in CPU_REQUESTS:
                assert set(resources["requests"]) == {"cpu", "memory"}, key
    # the run worker only orchestrates: no accelerator for it
    assert not any(k8s_specs.requests_gpu(s) for s in specs if s.component == "run_worker")
    assert sum(k8s_specs.requests_gpu(s) for s in specs) == len(GPU_ASSETS)


def test_validation_rejects_malformed_specs(specs):
    good = _steps(specs)["daring_checkpoint"].manifest
    k8s_specs.validate(good)

    unknown_field = copy.deepcopy(good)  # strict: a misspelt field is an error, not ignored
    container = unknown_field["spec"]["template"]["spec"]["containers"][0]
    container["resourcez"] = container.pop("resources")
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["template"]["spec"]["containers"] = {"name": "dagster"}
    missing_required = copy.deepcopy(good)
    del missing_required["spec"]["template"]["spec"]["containers"][0]["name"]
    for bad in (unknown_field, wrong_type, missing_required):
        with pytest.raises(kubernetes_validate.ValidationError):
            k8s_specs.validate(bad)


def test_malformed_op_tags_fail_in_dagsters_own_parser():
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster_k8s.job import get_user_defined_k8s_config

    with pytest.raises(DagsterInvalidConfigError):
        get_user_defined_k8s_config({k8s.K8S_CONFIG_TAG: '{"container_confg": {}}'})


def test_executor_setting(monkeypatch):
    assert k8s.executor_kind({}) == "default" and k8s.selected_executor({}) is None
    assert k8s.executor_kind({k8s.EXECUTOR_ENV: " K8S "}) == "k8s"
    with pytest.raises(ValueError, match=k8s.EXECUTOR_ENV):
        k8s.executor_kind({k8s.EXECUTOR_ENV: "celery"})
    # the demo and the tests keep Dagster's default executor
    assert defs.resolve_job_def("__ASSET_JOB").executor_def.name == "multi_or_in_process_executor"

    import orchestration.definitions as module

    monkeypatch.setenv(k8s.EXECUTOR_ENV, "k8s")
    try:
        reloaded = importlib.reload(module).defs
        for job in reloaded.resolve_all_job_defs():
            assert job.executor_def.name == "k8s", job.name
            assert job.executor_def.executor_creation_fn is not None
    finally:
        monkeypatch.delenv(k8s.EXECUTOR_ENV)
        importlib.reload(module)
    assert module.defs.resolve_job_def("__ASSET_JOB").executor_def.name == "multi_or_in_process_executor"
