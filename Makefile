# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel; GPU users install their CUDA build of torch first and it is kept (pyproject has a range).
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= align,video,viz,synth,export,ray,xls,dev

.PHONY: demo test install clean check-readme mutants

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/hlora-mer demo

LINTED := src tests benchmarks tools

test: $(VENV)/.installed
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy src
	$(PY) -m pytest -q

# Every README block, the slow ones too (the demo's all-subjects model: minutes); make test runs the fast ones.
check-readme: $(VENV)/.installed
	mkdir -p runs/check-readme
	cd runs/check-readme && find . -mindepth 1 -maxdepth 1 ! -name runs -exec rm -rf {} +  # keeps the demo's run
	$(PY) tools/check_readme.py --slow --workdir runs/check-readme

# Mutation testing of the modules that decide numbers ([tool.mutmut] in pyproject.toml, docs/testing.md).
# Slow (hours for all of them on 2 cores), so not part of `make test` or CI.
# `make mutants MODULE=hlora_mer.evaluation.metrics` runs one module; results are kept in mutants/ between runs.
# Set HLORA_MER_ANNOTATIONS to the real annotation files to run the tests that need them too.
MODULE ?=
MUTANT_JOBS ?= 2
mutants: $(VENV)/.installed
	$(VENV)/bin/mutmut run --max-children $(MUTANT_JOBS) $(if $(MODULE),"$(MODULE).*")
	@echo "Surviving mutants (see one with: $(VENV)/bin/mutmut show NAME; docs/testing.md lists the known ones):"
	@$(VENV)/bin/mutmut results | grep -E '$(MODULE).*: (survived|suspicious|no tests)$$' || echo "    none"
	@$(VENV)/bin/mutmut export-cicd-stats >/dev/null && cat mutants/mutmut-cicd-stats.json; echo

clean:
	rm -rf $(VENV) .pytest_cache mutants
