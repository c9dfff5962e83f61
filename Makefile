# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel; GPU users install their CUDA build of torch first and it is kept (pyproject has a range).
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= align,video,viz,synth,export,ray,xls,dev

.PHONY: demo test install clean check-readme

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

clean:
	rm -rf $(VENV) .pytest_cache
