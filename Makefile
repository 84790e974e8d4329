# The two newcomer commands:  `make demo` (set up, restore the sample photo)  and  `make test` (set up, run the tests).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch is pinned to the CPU build first; pyproject's looser range is then already satisfied.
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint clean bench-env browser

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/codeformer restore examples/grace_hopper.jpg -o results/demo -w 0.7 --save-faces --compare \
		--report html $(if $(WEIGHTS),--weights $(WEIGHTS))

lint: setup
	$(VENV)/bin/ruff check .

test: setup browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q --durations=15

# Debian's chromium for the page test (tests/test_serve_browser.py, driven by Playwright; Playwright's own browser
# download is not used). Installs only when no chromium is found; needs root or sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  [ -n "$$CODEFORMER_CHROMIUM" ] || \
	  { echo "installing Debian's chromium for the browser test"; \
	    $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# The benchmark's own environment: the peer port (spandrel) declares torchvision, so it goes in with --no-deps.
bench-env: .venv-bench/.installed

.venv-bench/.installed: pyproject.toml
	python3 -m venv .venv-bench
	.venv-bench/bin/pip install -q $(TORCH)
	.venv-bench/bin/pip install -q --no-deps spandrel==0.4.2 spandrel-extra-arches==0.2.0
	.venv-bench/bin/pip install -q safetensors einops psutil numpy pyyaml tqdm
	.venv-bench/bin/pip install -q --no-deps -e .
	touch $@

clean:
	rm -rf $(VENV) .venv-bench results .pytest_cache
