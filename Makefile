# keras-vae: `make demo` sets up and runs the main job; `make test` runs every test on all three backends.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= runs/digits

.PHONY: setup demo test test-fast lint docs clean

# torch is pinned to the CPU wheel first, so that nothing pulls several GB of CUDA builds.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[all]"
	touch $@

# The browser assets (onnxruntime-web for the explorer page, Swagger UI and ReDoc for /docs), pinned
# in package-lock.json. Without npm, a note: the page then decodes through the server (docs/explorer.md).
node_modules/.package-lock.json: package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci; else echo "npm not found: skipping the browser assets; the explorer page will decode through the server (docs/explorer.md)"; fi

setup: $(VENV)/.installed node_modules/.package-lock.json

# The main job on the built-in digits: train -> evaluate -> export to ONNX -> sample with onnxruntime.
# The digits are binarized (afresh in every step), so that the Bernoulli NLL is a true NLL.
demo: setup
	$(VENV)/bin/keras-vae train --epochs 60 --dynamic-binarization --quiet --overwrite --out $(RUN)
	$(VENV)/bin/keras-vae evaluate $(RUN) --num-samples 1000
	$(VENV)/bin/keras-vae export $(RUN) --out $(RUN)/decoder.onnx
	$(VENV)/bin/keras-vae generate $(RUN)/decoder.onnx -n 64 --seed 0 --scale 4 --out $(RUN)/onnx_samples.png
	@echo
	@echo "Pictures to look at in $(RUN)/: samples.png reconstructions.png test_reconstructions.png"
	@echo "  latent_space.png interpolation.png onnx_samples.png  (numbers: $(RUN)/metrics.json)"

# The layers (import-linter contracts in pyproject.toml) and the docs site (a broken link or
# API reference fails the strict build).
lint: setup
	$(VENV)/bin/lint-imports
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet

# The docs site at http://127.0.0.1:8001/ while editing.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve --dev-addr 127.0.0.1:8001

# Keras fixes its backend per process: the `backend` tests run once under each backend,
# the rest (pipelines end to end across backends, serving, packaging, data) once.
test: lint
	KERAS_BACKEND=jax $(PY) -m pytest -m backend
	KERAS_BACKEND=torch $(PY) -m pytest -m backend
	KERAS_BACKEND=tensorflow $(PY) -m pytest

# The same without the tests marked `slow` (end-to-end pipelines, kill -9, fuzzing, Ray):
# a few minutes, for quick feedback while editing.
test-fast: lint
	KERAS_BACKEND=jax $(PY) -m pytest -m "backend and not slow"
	KERAS_BACKEND=torch $(PY) -m pytest -m "backend and not slow"
	KERAS_BACKEND=tensorflow $(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache build
