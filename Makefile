# The two set-up commands of the README:
#   make quickstart   # the main job: quickstart recipe on SmolLM2-135M, writes out/quickstart/
#   make test         # the test suite
# Both create .venv on first use and install greenllm with the pins of constraints.txt.
PYTHON ?= python3
VENV   ?= .venv
PIP     = $(VENV)/bin/python -m pip
STAMP   = $(VENV)/.greenllm-installed

.PHONY: quickstart test install clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/greenllm run recipes/quickstart.yaml --out out/quickstart

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
