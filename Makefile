# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# `make demo` installs only what the demo needs (no test extras), under a stamp of its own.
DEMO_STAMP := $(VENV)/.demo-installed
PIP := $(PY) -m pip --disable-pip-version-check
BACKENDS_STAMP := $(VENV)/.backends-installed
# The other Keras backends, for `make test`. torch==2.13.0 exactly: that pin resolves to the CPU
# wheel here; an unpinned torch pulls gigabytes of CUDA libraries. torchdata (StatefulDataLoader)
# and grain: the other loaders seqprep feeds (tests/test_torch_loader.py, tests/test_grain.py).
BACKEND_PKGS := jax torch==2.13.0 torchdata==0.11.0 grain==0.2.18
# Tests marked `backend` run again under each of these (TensorFlow runs the whole suite).
OTHER_BACKENDS := jax torch
export TF_CPP_MIN_LOG_LEVEL := 3
export CUDA_VISIBLE_DEVICES := -1
export PYTHONHASHSEED := 0

.PHONY: install demo test bench docs lint clean

$(PY):
	@echo "make: creating $(VENV) with $(PYTHON) ..."
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) install -qq --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	@echo "make: installing seqprep with TensorFlow and its test dependencies into $(VENV) (a few minutes on a fresh machine) ..."
	$(PY) -m pip install --quiet -e ".[test,plots,parquet]"
	@echo "make: seqprep installed"
	touch $(STAMP)

$(BACKENDS_STAMP): $(STAMP)
	@echo "make: installing the JAX and PyTorch (CPU) backends: $(BACKEND_PKGS) ..."
	$(PY) -m pip install --quiet $(BACKEND_PKGS)
	@echo "make: backends installed"
	touch $(BACKENDS_STAMP)

# -qq: a first run should show the demo, not pip's warnings (a pip configuration's ignored
# index, setuptools' note on editable installs); errors still print and stop make.
$(DEMO_STAMP): pyproject.toml | $(PY)
	@echo "make: installing seqprep with TensorFlow and matplotlib into $(VENV) (a few minutes on a fresh machine) ..."
	@$(PIP) install -qq -e ".[demo]"
	@touch $(DEMO_STAMP)

install: $(STAMP)

demo: $(DEMO_STAMP)
	@echo "make: running the demo (downloads nothing; a few minutes on 2 cores) ..."
	@$(PY) -m seqprep demo --out seqprep-demo

# The whole suite on TensorFlow, then the tests marked `backend` under each other backend, each
# in its own pytest process (Keras picks its backend once per process). Every run is reported;
# the target fails if any failed. pytest exits 5 when it collects no test: a run that tests
# nothing is broken, so say so and fail. --no-loadscope-reorder: xdist hands out whole files in
# collection order, which conftest.py sorts longest first (xdist's own order, by test count,
# would leave the few-test, minutes-long files for last).
test: $(STAMP) $(BACKENDS_STAMP)
	@status=0; \
	echo "make test: the whole suite on KERAS_BACKEND=tensorflow"; \
	KERAS_BACKEND=tensorflow $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; the suite is missing." >&2; rc=1; fi; \
	[ $$rc -eq 0 ] || status=$$rc; \
	for backend in $(OTHER_BACKENDS); do \
		echo "make test: backend-sensitive tests (-m backend) on KERAS_BACKEND=$$backend"; \
		KERAS_BACKEND=$$backend $(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder -m backend tests; rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "make test: no test is marked backend; the $$backend run tested nothing." >&2; rc=1; fi; \
		[ $$rc -eq 0 ] || { echo "make test: FAILED on $$backend" >&2; status=$$rc; }; \
	done; \
	exit $$status

bench: $(STAMP) $(BACKENDS_STAMP)
	$(PY) -m pytest -q -s tests/benchmarks -p no:xdist -o addopts="" -o python_files="bench_*.py"

docs: $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	$(PY) -m mkdocs build --strict --site-dir build/site

lint: $(STAMP)
	$(PY) -m pip install --quiet ruff
	$(PY) -m ruff check seqprep tests examples

clean:
	rm -rf $(VENV) build seqprep-demo .pytest_cache
