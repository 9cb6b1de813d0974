# Two entry points (see README): `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install the project into it first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A second environment with the lowest jax / optax / numpy / flax that pyproject.toml declares,
# where `make test` also runs the library's tests (tests/floor_requirements.py).
FLOOR_VENV ?= .venv-floor
FLOOR_PY := $(FLOOR_VENV)/bin/python
FLOOR_STAMP := $(FLOOR_VENV)/.installed
FLOOR_TESTS := tests/test_mbag_reference.py tests/test_grouping.py tests/test_optax_contract.py \
	tests/test_validation.py tests/test_linalg.py tests/test_sharding.py

.PHONY: demo test test-floor docs-commands bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[all]"
	touch $(STAMP)

$(FLOOR_STAMP): pyproject.toml tests/floor_requirements.py
	$(PYTHON) -m venv $(FLOOR_VENV)
	$(FLOOR_PY) -m pip install --quiet --upgrade pip
	$(FLOOR_PY) -m pip install --quiet $$($(PYTHON) tests/floor_requirements.py) -e ".[test]"
	touch $(FLOOR_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m examples.demo

test: $(STAMP)
	$(PY) -m pytest -n 2 tests
	$(MAKE) test-floor

test-floor: $(FLOOR_STAMP)
	$(FLOOR_PY) -m pytest -n 2 $(FLOOR_TESTS)

# Every command of README.md and docs/*.md at its smoke size (CI runs it after the tests).
docs-commands: $(STAMP)
	$(PY) -m tests.docs_commands

bench: $(STAMP)
	$(PY) -m benchmarks.update_speed

clean:
	rm -rf $(VENV) $(FLOOR_VENV)
