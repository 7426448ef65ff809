# Copyright 2026 spatial_vlm_ros contributors
# SPDX-License-Identifier: Apache-2.0
#
# The contract: `make setup`, `make test`, `make demo`, `make bench`, `make lint`, `make soak`.
# Everything runs from .venv/ with nothing sourced. `make setup-live` adds .venv-vllm/ (vLLM for
# CPU, ~6 GB) for the live server tests; CI runs it, users need it only for those tests.

VENV    := $(CURDIR)/.venv
PY      := $(VENV)/bin/python
# Tests and demos stay on this machine: DDS discovery on loopback only, a private domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export PYTHONUNBUFFERED := 1

.PHONY: setup setup-live test demo bench lint soak clean

setup:
	@bash scripts/setup_venv.sh

setup-live: $(PY)
	@bash scripts/setup_vllm.sh

test: $(PY)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m spatial_vlm_ros.cli demo

bench: $(PY)
	@for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

# ruff selects the rules of ament_flake8 and ament_pep257 (ruff.toml says how); mypy reads mypy.ini.
lint: $(PY)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) scripts/check_headers.py

soak: $(PY)
	SPATIAL_VLM_SOAK=1 $(PY) -m pytest -m slow -s test/soak $(PYTEST_ARGS)

$(PY):
	@bash scripts/setup_venv.sh

clean:
	rm -rf $(VENV) .venv-vllm build install log .pytest_cache .hypothesis
