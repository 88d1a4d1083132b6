# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   - create the environment if missing, then materialize every asset (demo profile)
#   make test   - create the environment if missing, then run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DVC_ENV := .tools/dvc
export DAGSTER_HOME ?= $(CURDIR)/workspace/dagster_home

.PHONY: demo test env ui mlflow-ui label-studio bench clean browser postgres evaluate pretrain-base prod-check

# The project environment: every pin comes from requirements.lock (generated with
# `uv pip compile`, see README), installed without resolution so nothing drifts.
$(BIN)/.installed: requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# DVC in its own environment: its hydra/omegaconf pin antlr4 4.9, Dagster needs 4.13.
$(DVC_ENV)/bin/dvc: tools/dvc-requirements.txt
	test -x $(DVC_ENV)/bin/python || $(PYTHON) -m venv $(DVC_ENV)
	$(DVC_ENV)/bin/pip install --quiet -r tools/dvc-requirements.txt
	touch $@

# Label Studio (the human labelling server) in its own environment: its Django pins are its own.
LS_ENV := .tools/label-studio
$(LS_ENV)/bin/label-studio: tools/label-studio-requirements.txt
	test -x $(LS_ENV)/bin/python || $(PYTHON) -m venv $(LS_ENV)
	$(LS_ENV)/bin/pip install --quiet -r tools/label-studio-requirements.txt
	touch $@

$(DAGSTER_HOME)/dagster.yaml: infra/dagster/dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp infra/dagster/dagster.yaml $@

env: $(BIN)/.installed $(DVC_ENV)/bin/dvc $(LS_ENV)/bin/label-studio $(DAGSTER_HOME)/dagster.yaml

demo: env
	$(BIN)/python -m orchestration.refresh

test: env browser postgres
	$(BIN)/pytest

ui: env
	$(BIN)/dagster dev -m orchestration.definitions

bench: env
	-$(BIN)/python benchmarks/synthetic_source.py
	-$(BIN)/python benchmarks/filter_chain.py
	-$(BIN)/python benchmarks/annotation_flywheel.py
	-$(BIN)/python benchmarks/daring_overhead.py
	-$(BIN)/python benchmarks/dual_prior_iou.py
	-$(BIN)/python benchmarks/judge_accuracy.py
	-$(BIN)/python benchmarks/truth_judge.py
	-$(BIN)/python benchmarks/base_model.py

# Offline check of the production config: the Dagster instance yaml against Dagster's schema, every
# Kubernetes Job the run launcher and k8s_job_executor would submit (strict API schema), the
# docker-compose services and the accelerate configs. Connects to nothing.
prod-check: $(BIN)/.installed
	$(BIN)/python -m orchestration.prod_check

# Headless Chromium for the report-rendering test (Debian's package; installing it needs root or sudo).
browser:
	command -v chromium >/dev/null || { $$(command -v sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$(command -v sudo) apt-get install -y -qq chromium >/dev/null; }

# Debian's PostgreSQL server for the production-storage tests (they start their own server as
# the postgres user in a temporary folder; nothing is started here).
postgres:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $$(command -v sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$(command -v sudo) apt-get install -y -qq postgresql >/dev/null; }

# Pretrain the embedded base again (resumes from workspace/pretrain; writes models/embedded-base).
pretrain-base: env
	$(BIN)/cosmicman pretrain-base

# Re-evaluate the newest version of every variant (after `make demo` or any training run).
evaluate: env
	$(BIN)/cosmicman evaluate

clean:
	rm -rf workspace

mlflow-ui: env
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/workspace/mlflow.db --port 5000

label-studio: env
	$(LS_ENV)/bin/label-studio start --no-browser --internal-host 127.0.0.1 -p 8080
