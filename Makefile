# The two commands of the README: `make demo` and `make test`.
# Both create .venv, install the pinned dependencies and build the op library.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OPS_SO := tf_genrec/ops/_tf_genrec_ops.so

.PHONY: setup ops demo test clean

setup: $(VENV)/.installed ops

$(VENV)/.installed: requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-build-isolation -e .
	touch $@

ops: $(OPS_SO)

# Order-only on the venv: the editable install already built the library.
$(OPS_SO): $(wildcard custom_ops/*.cc custom_ops/*.h custom_ops/engine/*) | $(VENV)/.installed
	$(PY) setup.py -q build_ext --inplace

demo: setup
	$(VENV)/bin/tf-genrec demo

test: setup
	$(PY) -m pytest -q -n 2 tests

clean:
	rm -rf build $(OPS_SO) *.egg-info
