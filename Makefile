# podmigrate — the two commands that must keep working on a fresh machine:
#   make demo    the main job on the built-in local cluster (make demo NODES=real: on real kubelet+containerd nodes)
#   make test    the test suite (starts and stops its own local cluster)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STATE ?= $(CURDIR)/.localcluster
NODES ?= 2
REAL_NODES ?= 0

.PHONY: deps venv cluster-up cluster-down test lint demo bench image krew clean kind-up kind-down

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

deps:
	bash localcluster/install-deps.sh

cluster-up: deps venv
	$(PY) -m localcluster --state-dir $(STATE) up --nodes $(NODES) --real-nodes $(REAL_NODES)

cluster-down: venv
	$(PY) -m localcluster --state-dir $(STATE) down

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

PYTEST_ARGS ?= -ra
test: deps venv
	$(VENV)/bin/pytest $(PYTEST_ARGS)

# make demo NODES=real: the same move between two real nodes (upstream kubelet + containerd 2.3).
demo: deps venv
	$(PY) -m localcluster --state-dir $(STATE) demo $(if $(filter real,$(NODES)),--real-nodes,)

# A benchmark, not a test: its own cluster (instance 5), numbers and ratios, no speed assertions (bench/README.md).
# Each run appends its medians to bench/history.jsonl; `$(PY) -m bench history` compares the latest run with the previous.
# make bench BENCH_ARGS="--sizes 64,256 --repeat 3 --json /tmp/bench.json"
# make bench BENCH_ARGS="--sizes 64 --no-history"   (a quick check, kept out of the history)
BENCH_ARGS ?=
bench: deps venv
	$(PY) -m bench $(BENCH_ARGS)

# podmigrate's own image, built without Docker (imagebuild/: this machine's Debian Python, wheels from PyPI
# cached in ~/.cache/podmigrate) and pushed to REGISTRY (default: the local cluster's); prints repo@sha256:...
# With a container engine instead: docker build -f Containerfile .
# make image REGISTRY=127.0.0.1:5310 IMAGE_ARGS="--repository podmigrate --tag dev"
# Against the local cluster's registry (token authentication), it pushes as cluster-images with the credentials
# `localcluster up` generated (docs/registry.md); REGISTRY_CREDENTIALS=FILE for any other registry.
REGISTRY_CREDENTIALS ?= $(wildcard $(STATE)/registry-auth/cluster-images.dockerconfigjson)
image: venv
	$(PY) -m imagebuild --registry $(or $(REGISTRY),127.0.0.1:5310) \
		$(if $(REGISTRY_CREDENTIALS),--registry-credentials $(REGISTRY_CREDENTIALS),) $(IMAGE_ARGS)

# kubectl-migrate as a krew plugin (krew/): a Python zipapp in krew/dist/kubectl-migrate-v<version>.tar.gz and that
# archive's sha256 in krew/migrate.yaml (commit it), then krew's own validator and `kubectl krew install --manifest
# --archive` into a temporary KREW_ROOT (krew v0.4.3 built from the Go module proxy, cached in ~/.cache/podmigrate).
krew: venv
	archive="$$($(PY) krew/build.py)" && bash krew/validate.sh krew/migrate.yaml "$$archive"

# A kind cluster (Docker, or podman with KIND_ENGINE=podman) whose nodes restore checkpoints, with
# podmigrate installed from manifests/: kind-config/README.md. make demo and make test do not use it.
kind-up:
	bash kind-config/kind-up.sh

kind-down:
	bash kind-config/kind-down.sh

clean: cluster-down
	rm -rf $(VENV)
