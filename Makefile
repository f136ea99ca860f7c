# The two set-up commands of the README:
#   make quickstart   # the main job: quickstart recipe on SmolLM2-135M, writes out/quickstart/
#   make test         # the test suite
# Both create .venv on first use and install exactly requirements.lock (see tools/lock.py).
#
# Also:
#   make lint          # ruff (lint + format check) and mypy on the torch-free layers
#   make lock          # regenerate requirements.lock / constraints-jetson.txt from pyproject
#   make test-latest   # the newest versions pyproject allows, in .venv-latest: drift shows here first
#   make install-jetson  # on a Jetson: greenllm next to JetPack's torch (no torch pin)
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/python -m pip
PIP_VERSION = 26.3
STAMP   = $(VENV)/.greenllm-installed
LATEST ?= .venv-latest

.PHONY: quickstart test install lint lock test-latest install-jetson clean

# llama-cpp-python has only an sdist: pip builds llama.cpp with cmake + g++ (about 12 minutes on
# 2 cores, once per machine: pip keeps the wheel in its cache); these flags skip what greenllm
# does not use (the multimodal library, tests, examples).
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF $(LLAMA_NO_AMX)
# ggml builds with -march=native: on a CPU with Intel AMX (Sapphire Rapids and later, such as
# this project's CI machines) that compiles its AMX matmul, which crashed (SIGSEGV in
# ggml_backend_amx_mul_mat) on Q8_0 with small matrices. Explicit -mno-amx-* beat -march's
# implied flags in GCC, so AMX stays off and the rest of the native ISA stays on (x86 only).
ifeq ($(shell uname -m),x86_64)
LLAMA_NO_AMX = -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' -DCMAKE_CXX_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16'
endif

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q "pip==$(PIP_VERSION)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install -q -r requirements.lock
	$(PIP) install -q --no-deps -e .
	$(PIP) check
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/greenllm run recipes/quickstart.yaml --out out/quickstart

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples tools
	$(VENV)/bin/ruff format --check src tests benchmarks examples tools
	$(VENV)/bin/mypy

lock: $(STAMP)
	$(VENV)/bin/python tools/lock.py

# Newest allowed versions (only torch stays at the CPU build on disk): not the lock.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
	$(LATEST)/bin/python -m pip check
	$(LATEST)/bin/python -m pip freeze --exclude-editable > $(LATEST)/resolved.txt
	GREENLLM_LATEST=1 $(LATEST)/bin/python -m pytest -q -p no:cacheprovider

# On a Jetson (JetPack 6, Python 3.10): NVIDIA's torch must already be in the environment
# (python3 -m venv --system-site-packages .venv, after installing the JetPack torch wheel).
install-jetson:
	$(PYTHON) -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
	$(PYTHON) -m pip install -c constraints-jetson.txt -e ".[torch,jetson,carbon,peft,datasets,plots]"
	$(PYTHON) -m pip check

clean:
	rm -rf $(VENV) $(LATEST) out .pytest_cache
