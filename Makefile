# Two entry points (see README): `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install the project into it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test docs-commands bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m examples.demo

test: $(STAMP)
	$(PY) -m pytest -n 2 tests

# Every command of README.md and docs/*.md at its smoke size (CI runs it after the tests).
docs-commands: $(STAMP)
	$(PY) -m tests.docs_commands

bench: $(STAMP)
	$(PY) -m benchmarks.update_speed

clean:
	rm -rf $(VENV)
