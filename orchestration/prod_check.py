"""Offline check of the production configuration (``make prod-check``).

- ``infra/dagster/dagster.production.yaml`` against Dagster's instance schema, every ``{env: X}``
  resolved (dummies where unset), the storage block against dagster-postgres's own schema and the
  run launcher's config against ``K8sRunLauncher``'s;
- every Kubernetes Job that launcher and ``k8s_job_executor`` would submit for this code location,
  strictly validated against the Kubernetes API schema (GPU requests where the assets need them);
- ``infra/docker-compose.yaml``: the services, their references, and PostgreSQL URIs that name
  psycopg2 (``docker compose`` itself is not run);
- ``infra/accelerate/*.yaml`` read by accelerate's own config class.

Connects to nothing. Prints each check; exits non-zero if any fails.
"""

import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

import yaml

from orchestration import k8s_specs

ROOT = k8s_specs.ROOT
COMPOSE = ROOT / "infra" / "docker-compose.yaml"
ACCELERATE = ROOT / "infra" / "accelerate"
COMPOSE_SERVICES = {"postgres", "minio", "mlflow", "label-studio"}
PG_URI = re.compile(r"\bpostgres(?:ql)?(?:\+\w+)?://")


def check_instance(path: Path = k8s_specs.PRODUCTION_INSTANCE) -> str:
    from dagster._config import process_config
    from dagster._serdes.config_class import class_from_code_pointer

    raw = k8s_specs.load_instance_config(path)
    scheme = ((raw.get("storage") or {}).get("postgres", {}).get("postgres_db") or {}).get("scheme")
    if scheme != "postgresql+psycopg2":
        raise ValueError(f"storage.postgres.postgres_db.scheme is {scheme!r}, expected postgresql+psycopg2")
    launcher = k8s_specs.run_launcher_from_config(raw)
    # the storage class the instance would load, and its config against that class's own schema
    storage = k8s_specs.instance_ref(launcher, path).storage_data
    cls = class_from_code_pointer(storage.module_name, storage.class_name)
    with k8s_specs.dummy_env(k8s_specs.env_references(storage.config_dict)):
        result = process_config(cls.config_type(), storage.config_dict)
    if not result.success:
        raise ValueError(f"{cls.__name__} config: {[e.message for e in result.errors]}")
    names = ", ".join(sorted(k8s_specs.env_references(raw)))
    return (f"{path.relative_to(ROOT)}: instance schema, {cls.__name__} and {type(launcher).__name__} "
            f"(namespace {launcher.job_namespace}) configs valid; env: {names}")


def check_job_specs() -> str:
    specs = k8s_specs.build_job_specs()
    for spec in specs:
        try:
            k8s_specs.validate(spec.manifest)
        except Exception as e:
            raise ValueError(f"{spec.label}: {getattr(e, 'message', e)}") from e
    gpu = sorted({s.step_key for s in specs if k8s_specs.requests_gpu(s)})
    runs = sum(s.component == "run_worker" for s in specs)
    return (f"{len(specs)} Kubernetes Jobs ({runs} run workers, {len(specs) - runs} step workers) valid for "
            f"Kubernetes {k8s_specs.K8S_VERSION} (strict); nvidia.com/gpu requested by: {', '.join(gpu)}")


def check_compose(path: Path = COMPOSE) -> str:
    text = path.read_text()
    doc = yaml.safe_load(text)
    services = doc.get("services") or {}
    missing = COMPOSE_SERVICES - set(services)
    if missing:
        raise ValueError(f"services missing: {sorted(missing)}")
    volumes = set(doc.get("volumes") or {})
    for name, service in services.items():
        if not service.get("image"):
            raise ValueError(f"service {name} has no image")
        for dep in service.get("depends_on") or []:
            if dep not in services:
                raise ValueError(f"service {name} depends on undefined service {dep}")
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if not source.startswith((".", "/", "~")) and source not in volumes:
                raise ValueError(f"service {name} mounts undeclared volume {source}")
    uris = PG_URI.findall(text)
    if not uris:
        raise ValueError("no PostgreSQL URI found")
    bad = sorted({u for u in uris if u != "postgresql+psycopg2://"})
    if bad:
        raise ValueError(f"PostgreSQL URIs must name psycopg2 (postgresql+psycopg2://), found {bad}")
    env = sorted(set(re.findall(r"\$\{(\w+)\}", text)))
    return (f"{path.relative_to(ROOT)}: services {', '.join(sorted(services))}; {len(uris)} PostgreSQL URI(s) "
            f"postgresql+psycopg2://; .env needs {', '.join(env)}")


def check_accelerate(folder: Path = ACCELERATE) -> str:
    from accelerate.commands.config.config_args import ClusterConfig

    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise ValueError(f"no accelerate configs in {folder}")
    seen = []
    for f in files:
        raw = yaml.safe_load(f.read_text())
        config = ClusterConfig.from_yaml_file(str(f))
        unknown = set(raw) - set(vars(config))
        if unknown:
            raise ValueError(f"{f.name}: keys accelerate does not know: {sorted(unknown)}")
        if not config.num_processes or config.num_processes < 1:
            raise ValueError(f"{f.name}: num_processes {config.num_processes}")
        seen.append(f"{f.name} ({config.distributed_type.value}, {config.num_machines} machine(s) x "
                    f"{config.num_processes} processes, {config.mixed_precision})")
    return "accelerate ClusterConfig: " + "; ".join(seen)


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("dagster instance", check_instance),
    ("kubernetes jobs", check_job_specs),
    ("docker compose", check_compose),
    ("accelerate", check_accelerate),
]


def main() -> int:
    failed = 0
    for name, check in CHECKS:
        try:
            print(f"ok   {name}: {check()}", flush=True)
        except Exception as e:  # noqa: BLE001 - report every check, then exit non-zero
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(limit=3, file=sys.stderr)
    print(f"prod-check: {len(CHECKS) - failed}/{len(CHECKS)} checks passed"
          " (offline: no cluster, no Docker engine, no database contacted)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
