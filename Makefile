# Two entry points: `make demo` (train + evaluate on synthetic circles) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/circles

.PHONY: demo test lint format bench clean

$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[$*]'
	touch $@

demo: $(VENV)/.installed-test
	$(PY) -m instseg_jax.main --config=configs/circles.py --workdir=$(WORKDIR)

test: lint
	$(PY) -m pytest -q tests

# Formatting and lint at one line width (pyproject.toml); `make format` fixes what it can.
lint: $(VENV)/.installed-test
	$(VENV)/bin/pyink --check --quiet .
	$(VENV)/bin/ruff check --quiet .

format: $(VENV)/.installed-test
	$(VENV)/bin/pyink --quiet .
	$(VENV)/bin/ruff check --quiet --fix .

bench: $(VENV)/.installed-bench
	$(PY) benchmarks/loss_bench.py
	$(PY) benchmarks/cluster_bench.py
	$(PY) benchmarks/predict_bench.py
	$(PY) benchmarks/data_bench.py
	$(PY) benchmarks/model_bench.py

clean:
	rm -rf runs
