# The two set-up commands: `make test` (the test suite, what CI runs) and `make demo` (the main job end to end).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.co2s-installed

.PHONY: test demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

demo: $(STAMP)
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh demo_out

clean:
	rm -rf demo_out runs .pytest_cache
