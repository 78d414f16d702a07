# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL := 3
export CUDA_VISIBLE_DEVICES := -1
export PYTHONHASHSEED := 0

.PHONY: install demo test bench docs lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[test,plots,parquet]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m seqprep demo --out seqprep-demo

# pytest exits 5 when it collects no test: a suite that runs nothing is broken, so say so and fail.
test: $(STAMP)
	@$(PY) -m pytest -q -n 2 --dist loadfile; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; the suite is missing." >&2; exit 1; fi; \
	exit $$rc

bench: $(STAMP)
	$(PY) -m pytest -q -s tests/benchmarks -p no:xdist -o addopts="" -o python_files="bench_*.py"

docs: $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	$(PY) -m mkdocs build --strict --site-dir build/site

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff
	$(PY) -m ruff check seqprep tests examples

clean:
	rm -rf $(VENV) build seqprep-demo .pytest_cache
