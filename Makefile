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

CHROMIUM := /usr/bin/chromium

.PHONY: install browser test test-slow check bench demo clean

# Bytecode of the project's own modules, kept current on every make: an editable install is not
# compiled by pip, and where PYTHONDONTWRITEBYTECODE is set every command would compile them again
# (a fifth of a cached `rlhf-eval eval`'s start; docs/performance.md).
install: $(STAMP)
	@$(PY) -m compileall -q rlhf_eval >/dev/null

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints-cpu.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

# The dashboard's browser tests (tests/dashboards/test_browser.py, test_live.py) drive Debian's Chromium
# through Playwright (never a browser Playwright downloads): install it with apt when missing. `make test`
# sets RLHF_EVAL_REQUIRE_BROWSER, so there a missing browser fails those tests instead of skipping them.
browser:
	@test -x $(CHROMIUM) || { \
	  echo "$(CHROMIUM) is missing: installing chromium with apt-get for the dashboard's browser tests"; \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  { $$SUDO apt-get update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null && \
	  test -x $(CHROMIUM) || { \
	    echo "error: could not install chromium (apt-get install chromium); the dashboard's browser tests" \
	      "need $(CHROMIUM)" >&2; exit 1; }; }

test: install browser
	RLHF_EVAL_REQUIRE_BROWSER=1 $(PY) -m pytest -q -m "not slow"

test-slow: install browser
	RLHF_EVAL_REQUIRE_BROWSER=1 $(PY) -m pytest -q -m slow

# Benchmarks print their figures side by side with the targets (docs/performance.md); never part of `make test`.
# About 15 to 40 minutes on 2 CPU cores (the machine's load moves it); `make bench BENCH_FLAGS=--quick` for a
# smoke run of each. bench/gpu.sh runs them at GPU scale on a CUDA machine.
BENCH_FLAGS ?=
bench: install
	$(PY) bench/end_to_end.py $(BENCH_FLAGS)
	$(PY) bench/end_to_end.py --threads 1 $(BENCH_FLAGS)
	$(PY) bench/end_to_end.py --hidden 512 --layers 7 --heads 8 $(BENCH_FLAGS)
	$(PY) bench/scoring_flops.py $(BENCH_FLAGS)
	$(PY) bench/reward_prefix.py $(BENCH_FLAGS)
	$(PY) bench/bon_estimator.py $(BENCH_FLAGS)
	$(PY) bench/store.py $(BENCH_FLAGS)
	$(PY) bench/memory.py $(BENCH_FLAGS)
	$(PY) bench/engines.py $(BENCH_FLAGS)

check: install
	$(VENV)/bin/ruff check rlhf_eval tests dashboards
	$(VENV)/bin/mypy

demo: install
	$(VENV)/bin/rlhf-eval demo

clean:
	rm -rf $(VENV) build *.egg-info
