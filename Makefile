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
#   make llama-tools   # llama.cpp's llama-bench + llama-server, built from the llama.cpp that
#                      # the locked llama-cpp-python vendors (runtimes llama-server / llama-bench)
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/python -m pip
PIP_VERSION = 26.3
STAMP   = $(VENV)/.greenllm-installed
LATEST ?= .venv-latest

.PHONY: quickstart test install lint lock test-latest install-jetson clean llama-tools

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

# llama.cpp's own binaries (docs/runtimes.md, "llama.cpp's own binaries"): llama-bench and
# llama-server built from vendor/llama.cpp of the llama-cpp-python sdist the lock pins, so the
# in-process runtime and the binaries run the same llama.cpp. Into
# $(GREENLLM_CACHE)/llama.cpp-<version>/bin (greenllm finds them there; or set
# GREENLLM_LLAMA_BENCH / GREENLLM_LLAMA_SERVER to other binaries). Static, release, no curl /
# OpenSSL / web UI (nothing is downloaded at build time), AMX off as above; LLAMA_TOOLS_JOBS
# parallel jobs. The build is stamped: make llama-tools again only prints the paths.
LLAMA_CPP_VERSION := $(shell sed -n 's/^llama-cpp-python==//p' requirements.lock)
GREENLLM_CACHE ?= $(HOME)/.cache/greenllm
LLAMA_TOOLS_DIR ?= $(GREENLLM_CACHE)/llama.cpp-$(LLAMA_CPP_VERSION)
LLAMA_TOOLS_JOBS ?= 2
LLAMA_TOOLS_CMAKE_ARGS = -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
	-DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
	-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
	-DLLAMA_BUILD_COMMIT=llama-cpp-python-$(LLAMA_CPP_VERSION) $(LLAMA_NO_AMX)
LLAMA_TOOLS_STAMP = $(LLAMA_TOOLS_DIR)/bin/.built

llama-tools: $(LLAMA_TOOLS_STAMP)
	@echo "GREENLLM_LLAMA_BENCH=$(LLAMA_TOOLS_DIR)/bin/llama-bench"
	@echo "GREENLLM_LLAMA_SERVER=$(LLAMA_TOOLS_DIR)/bin/llama-server"

$(LLAMA_TOOLS_STAMP):
	@test -n "$(LLAMA_CPP_VERSION)" || { echo "llama-tools: no llama-cpp-python pin in requirements.lock"; exit 1; }
	mkdir -p $(LLAMA_TOOLS_DIR)/bin
	test -f $(LLAMA_TOOLS_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz || \
	  $(PYTHON) -m pip download -q --no-deps --no-binary :all: \
	    llama-cpp-python==$(LLAMA_CPP_VERSION) -d $(LLAMA_TOOLS_DIR)
	rm -rf $(LLAMA_TOOLS_DIR)/src && mkdir -p $(LLAMA_TOOLS_DIR)/src
	tar -xzf $(LLAMA_TOOLS_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz \
	  -C $(LLAMA_TOOLS_DIR)/src --strip-components=3 \
	  llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp
	cmake -S $(LLAMA_TOOLS_DIR)/src -B $(LLAMA_TOOLS_DIR)/build $(LLAMA_TOOLS_CMAKE_ARGS) >/dev/null
	nice -n 10 cmake --build $(LLAMA_TOOLS_DIR)/build --target llama-bench llama-server \
	  -j $(LLAMA_TOOLS_JOBS)
	cp $(LLAMA_TOOLS_DIR)/build/bin/llama-bench $(LLAMA_TOOLS_DIR)/build/bin/llama-server \
	  $(LLAMA_TOOLS_DIR)/bin/
	touch $@

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
