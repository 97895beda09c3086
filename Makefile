# Setup is two commands: `make demo` and `make test`. Both create .venv when missing and
# install the project with the CPU build of torch pinned in constraints-cpu.txt. A stamp keyed
# on pyproject.toml and the constraints makes a second run skip the install.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALL_KEY := $(shell cat pyproject.toml constraints-cpu.txt 2>/dev/null | sha256sum | cut -c1-16)
STAMP := $(VENV)/.installed-$(INSTALL_KEY)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-slow check demo clean

install: $(STAMP)

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints-cpu.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

test: install
	$(PY) -m pytest -q -m "not slow"

test-slow: install
	$(PY) -m pytest -q -m slow

check: install
	$(VENV)/bin/ruff check rlhf_eval tests dashboards
	$(VENV)/bin/mypy

demo: install
	$(VENV)/bin/rlhf-eval demo

clean:
	rm -rf $(VENV) build *.egg-info
