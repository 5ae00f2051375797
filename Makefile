VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= dev,dlib

.PHONY: setup test test-fast bench lint clean

# One command: a virtual environment with the package, the offline landmark backend and the dev tools.
# constraints.txt pins torch to the CPU build available on these machines (no multi-GB CUDA wheels).
setup:
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"

test:
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not slow"

bench:
	$(PY) bench/run_all.py $(BENCH)

lint:
	$(PY) -m ruff check nvsvideo tests bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
