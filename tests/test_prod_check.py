"""make prod-check's config checks pass on the committed files and fail on broken copies
(the Kubernetes Job specs are covered by test_k8s_jobs.py)."""

import shutil

import pytest
import yaml

from orchestration import k8s_specs, prod_check


def test_committed_production_config_passes():
    assert "K8sRunLauncher" in prod_check.check_instance()
    assert "postgresql+psycopg2://" in prod_check.check_compose()
    assert "multi_gpu.yaml" in prod_check.check_accelerate()


def _broken_instance(tmp_path, edit):
    doc = yaml.safe_load(k8s_specs.PRODUCTION_INSTANCE.read_text())
    edit(doc)
    path = tmp_path / "dagster.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("edit", [
    lambda d: d.update(run_lancher=d.pop("run_launcher")),  # unknown top-level key
    lambda d: d["storage"]["postgres"]["postgres_db"].update(port="not-a-port"),  # wrong type
    lambda d: d["storage"]["postgres"]["postgres_db"].update(scheme="postgresql"),  # psycopg 3
    lambda d: d["run_launcher"]["config"].update(job_namespce="x"),  # not a K8sRunLauncher field
    lambda d: d["run_launcher"]["config"].update(env_secrets="one-secret"),  # a list expected
])
def test_broken_instance_config_fails(tmp_path, edit):
    with pytest.raises(Exception):  # noqa: B017 - Dagster config errors or ValueError
        prod_check.check_instance(_broken_instance(tmp_path, edit))


def test_compose_needs_psycopg2_uris_and_declared_services(tmp_path):
    text = prod_check.COMPOSE.read_text()
    bare = tmp_path / "bare.yaml"
    bare.write_text(text.replace("postgresql+psycopg2://", "postgresql://"))
    with pytest.raises(ValueError, match="psycopg2"):
        prod_check.check_compose(bare)
    doc = yaml.safe_load(text)
    doc["services"]["mlflow"]["depends_on"] = ["postgres", "s3"]
    undeclared = tmp_path / "deps.yaml"
    undeclared.write_text(yaml.safe_dump(doc))
    with pytest.raises(ValueError, match="undefined service s3"):
        prod_check.check_compose(undeclared)


def test_accelerate_configs_are_read_by_accelerate(tmp_path):
    shutil.copy(prod_check.ACCELERATE / "multi_gpu.yaml", tmp_path / "ok.yaml")
    assert "ok.yaml" in prod_check.check_accelerate(tmp_path)
    (tmp_path / "bad.yaml").write_text("distributed_type: MULTI_GPU\nnum_procs: 8\n")
    with pytest.raises(Exception):  # noqa: B017 - accelerate rejects unknown keys itself
        prod_check.check_accelerate(tmp_path)
