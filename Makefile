# The two newcomer commands:  `make demo` (set up, restore the sample photo)  and  `make test` (set up, run the tests).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# torch is pinned to the CPU build first; pyproject's looser range is then already satisfied.
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev]'
	touch $@

demo: setup
	$(VENV)/bin/codeformer restore examples/grace_hopper.jpg -o results/demo -w 0.7 --save-faces --compare

lint: setup
	$(VENV)/bin/ruff check .

test: setup
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) results .pytest_cache
