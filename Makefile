# halo: `make demo` and `make test` do everything from a fresh clone (venv, install, run).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/.dagster_home
PRESET ?= demo
# `make ui` serves the artifact folder read-only here, and the metadata of every run (`make demo`'s
# too) links its report and plots at this address, so they open in the browser
FILES_PORT ?= 3001
export HALO_ROOT ?= $(CURDIR)/halo_data
export HALO_FILES_URL ?= http://127.0.0.1:$(FILES_PORT)

.PHONY: help venv install demo demo-go test ui validate bench bench-survey clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install only when the project's dependencies change.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

venv: $(BIN)/python  ## create .venv

install: $(VENV)/.installed  ## install halo and its dependencies into .venv

$(DAGSTER_HOME)/dagster.yaml: deploy/dagster.local.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp $< $@

demo: install $(DAGSTER_HOME)/dagster.yaml  ## materialize the whole graph on the synthetic dataset; prints GO/NO-GO (PRESET=demo|recommended|gen5_prime, SET="KEY=VALUE ...")
	$(BIN)/python -m halo_assets.demo --preset $(PRESET) $(foreach s,$(SET),--set $(s))

# The smallest training budget measured to earn GO (README, "Where the demo stands"): `make demo` keeps the
# 10-minute budget of docs/design.md and ends NO-GO on test AUROC alone.
demo-go: install $(DAGSTER_HOME)/dagster.yaml  ## the demo at 15,500 train LRGs: GO for seeds 0 and 1, ~17 min on 2 cores (SET adds more)
	$(BIN)/python -m halo_assets.demo --preset demo --set simulation.n_lrg.train=15500 $(foreach s,$(SET),--set $(s))

test: install  ## run the test suite (two workers, each test file whole on one: its module fixtures built once)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

ui: install $(DAGSTER_HOME)/dagster.yaml  ## Dagster UI on http://127.0.0.1:3000 over the demo's instance; reports on $(HALO_FILES_URL)
	@mkdir -p $(HALO_ROOT)
	$(BIN)/python -m http.server $(FILES_PORT) --bind 127.0.0.1 --directory $(HALO_ROOT) & files=$$!; \
	trap 'kill $$files' EXIT; $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

validate: install  ## check that the Dagster definitions load
	$(BIN)/dagster definitions validate -w workspace.yaml

bench: install  ## throughput benchmarks, one JSON line each (a few minutes on 2 cores)
	$(BIN)/python -m benchmarks.simulator
	$(BIN)/python -m benchmarks.data_path
	$(BIN)/python -m benchmarks.trainer_overhead
	$(BIN)/python -m benchmarks.gpu_step

bench-survey: install  ## bare forward vs halo score and halo catalog (1, 2 workers), filter, selection grid (~30 min on 2 cores)
	$(BIN)/python -m benchmarks.survey --selection

clean:  ## remove local artifacts (keeps .venv)
	rm -rf halo_data .dagster_home .pytest_cache
