# milan: `make demo` runs the main job end to end; `make test` runs every check CI runs.

CARGO ?= cargo
MILAN := target/release/milan
DEMO := target/demo
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := decode_records open_damaged model_ops npy_codes
BENCH := target/bench

.PHONY: demo demo-codes setup setup-gpu model model-fp16 test lint unit test-deps fuzz fuzz-tools bench bench-compare \
	python python-test python-milvus-env python-ray-env

## demo: sets up ONNX Runtime and the real InceptionV3, indexes real images (Fashion-MNIST, or
## your own with IMAGES=DIR), queries by image and writes an HTML page of the results.
MODEL := target/models/inception_v3.onnx
IMAGES ?=
DEMO_IMAGES := $(if $(IMAGES),$(IMAGES),$(DEMO)/images)

demo: $(MILAN) setup model
	@rm -rf $(DEMO)/index $(DEMO)/results.html $(DEMO)/eval.html $(DEMO)/duplicates.html && mkdir -p $(DEMO)
	@if [ -z "$(IMAGES)" ]; then python3 scripts/fashion_mnist_images.py --per-class 40 --out $(DEMO)/images; fi
	@echo "== an untrained 64-bit hash head (random hyperplanes) for the model's features"
	$(MILAN) head init --lsh --bits 64 --seed 1 --model $(MODEL) --out $(DEMO)/lsh64.head
	@echo "== creating the index and adding every image (labels from folder names)"
	$(MILAN) index create $(DEMO)/index --model $(MODEL) --head $(DEMO)/lsh64.head
	$(MILAN) index add $(DEMO)/index $(DEMO_IMAGES) --recursive --label-from-dir --keep-features
	$(MILAN) index info $(DEMO)/index
	@echo "== near-duplicates: images whose LSH codes are identical, joined into groups (a trained head"
	@echo "   gives a whole class near-identical codes, so duplicates are looked for before training)"
	$(MILAN) index duplicates $(DEMO)/index --radius 0 --limit 10 --html $(DEMO)/duplicates.html
	@if [ -z "$(IMAGES)" ]; then \
		echo "== training a 64-bit MiLaN head on the kept features (60/40 split per class), measuring it, re-coding the index"; \
		$(MILAN) train --data $(DEMO)/index --bits 64 --seed 1 --out $(DEMO)/milan64.head && \
		$(MILAN) eval --data $(DEMO)/index --head $(DEMO)/milan64.head --html $(DEMO)/eval.html && \
		$(MILAN) index rehash $(DEMO)/index --head $(DEMO)/milan64.head; \
	fi
	@echo "== three images as queries: top 19 results each, as JSON lines and as an HTML page"
	$(MILAN) query $(DEMO)/index --top-k 19 --json --html $(DEMO)/results.html \
		--image $$(find $(DEMO_IMAGES) -type f \( -name '*.png' -o -name '*.jpg' -o -name '*.tif' \) | sort | awk 'NR % 97 == 1' | head -3)
	@echo
	@echo "done. Index: $(DEMO)/index; results page: $(DEMO)/results.html (query framed blue, wrong class red)."
	@echo "Near-duplicates: $(DEMO)/duplicates.html (one row per group)."
	@if [ -z "$(IMAGES)" ]; then echo "Evaluation report: $(DEMO)/eval.html (the trained head against LSH and float features)."; fi

## demo-codes: the search engine alone, on 200,000 synthetic 64-bit codes.
demo-codes: $(MILAN)
	@rm -rf $(DEMO)/codes && mkdir -p $(DEMO)/codes
	$(MILAN) bench generate --bits 64 --count 200000 --centres 200 --flip 0.12 --seed 7 \
		--out $(DEMO)/codes/codes.npy --queries 5 --queries-out $(DEMO)/codes/queries.npy
	$(MILAN) index create $(DEMO)/codes/index --bits 64 --expected-size 200000
	$(MILAN) index import $(DEMO)/codes/index --codes $(DEMO)/codes/codes.npy --quiet
	$(MILAN) query $(DEMO)/codes/index --codes $(DEMO)/codes/queries.npy --top-k 5 --json
	$(MILAN) bench search $(DEMO)/codes/index --codes $(DEMO)/codes/queries.npy --top-k 20 --radius 2,4,8

## setup: ONNX Runtime 1.31.1 (CPU) into .onnxruntime/cpu; setup-gpu: the CUDA build.
setup:
	bash scripts/setup-onnxruntime.sh cpu

setup-gpu:
	bash scripts/setup-onnxruntime.sh gpu

## model: the real InceptionV3 (nsfwjs 4.3.0, converted and checked), see docs/models.md.
model: $(MODEL)

$(MODEL): scripts/model/convert_nsfwjs.py scripts/model/make_model.sh
	bash scripts/model/make_model.sh

## model-fp16: its fp16 variant (scripts/model/to_fp16.py), checked against it on the CPU by
## scripts/model/check_fp16.py on 1,000 Fashion-MNIST images (a few minutes); see docs/models.md.
MODEL_FP16 := target/models/inception_v3_fp16.onnx
MODEL_PY := target/model-venv/bin/python

model-fp16: $(MODEL_FP16)

# As for the float32 model, only a checked file replaces $(MODEL_FP16). make_model.sh makes the
# venv; a model copied in without it is rebuilt once to get it.
$(MODEL_FP16): $(MODEL) scripts/model/to_fp16.py scripts/model/check_fp16.py | $(MILAN) setup
	@test -x $(MODEL_PY) || FORCE=1 bash scripts/model/make_model.sh
	$(MODEL_PY) scripts/model/to_fp16.py $(MODEL) $@.new.onnx
	MILAN=$(MILAN) $(MODEL_PY) scripts/model/check_fp16.py --fp32 $(MODEL) --fp16 $@.new.onnx --device cpu \
		|| { rm -f $@.new.onnx; exit 1; }
	mv -f $@.new.onnx $@

$(MILAN): FORCE
	$(CARGO) build --release --locked

FORCE:

## test: formatting, lints, every test, docs, and a short run of every fuzz target.
test: lint unit fuzz

# Each feature set that makes sense alone is linted with all its targets (tests, examples,
# benchmarks): the default (the command line, with the benchmarks' internals), the engine alone,
# images, train. .ci/check-features.sh checks what each pulls in.
lint:
	$(CARGO) fmt --all -- --check
	CARGO="$(CARGO)" bash .ci/check-features.sh
	$(CARGO) clippy --locked --all-targets --features bench-internals -- -D warnings
	$(CARGO) clippy --locked -p milan --all-targets --no-default-features -- -D warnings
	$(CARGO) clippy --locked -p milan --all-targets --no-default-features --features images -- -D warnings
	$(CARGO) clippy --locked -p milan --all-targets --no-default-features --features train -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps --workspace
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps -p milan --no-default-features
	$(CARGO) fmt --manifest-path python/Cargo.toml -- --check
	CARGO_TARGET_DIR=$(CURDIR)/target $(CARGO) clippy --locked --manifest-path python/Cargo.toml -- -D warnings

# The engine alone runs its own tests too (unit, integration, documentation, the threads
# example's build), as an application with `default-features = false` compiles it.
unit: setup test-deps
	$(CARGO) test --locked --workspace
	$(CARGO) test --locked -p milan --no-default-features
	$(MAKE) --no-print-directory python-test

# The HTML page test renders in a real headless Chromium (Debian's package).
test-deps:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi; }

fuzz-tools:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets this stable toolchain accept them. The
# checked-in reproducers replay first, then each target runs for FUZZ_SECONDS.
FUZZ_FLAGS_decode_records :=
# A damaged page header can make the storage engine allocate about 2 GiB before it fails with an
# error (a reproducer is in regressions/): allowed, so that the target keeps checking for panics.
FUZZ_MEMORY := -rss_limit_mb=6144 -malloc_limit_mb=4096
FUZZ_FLAGS_open_damaged := -timeout=10 $(FUZZ_MEMORY)
FUZZ_FLAGS_model_ops := -timeout=10 -len_control=0 -max_len=1024
# A lying header must not allocate what it claims: far below any claim worth testing.
FUZZ_FLAGS_npy_codes := -timeout=10 -malloc_limit_mb=64 -rss_limit_mb=512

fuzz: fuzz-tools
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz build
	cd fuzz && for dir in regressions/*/; do \
		target=$$(basename $$dir); \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$target $$dir -- -runs=0 $(FUZZ_MEMORY) || exit 1; \
	done
	cd fuzz && $(foreach target,$(FUZZ_TARGETS),RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $(target) -- -max_total_time=$(FUZZ_SECONDS) $(FUZZ_FLAGS_$(target)) &&) true

## python: the Python package (python/) built and installed into a virtual environment under
## target/, with maturin, numpy and pytest from PyPI; python-test runs its tests. The build's
## target folder is kept, so that rebuilds are incremental.
PYTHON ?= python3
PY_VENV := target/python-venv
PY := $(PY_VENV)/bin/python
PY_TARGET := $(CURDIR)/target/python-build

python: $(PY_VENV)/.tools
	PATH="$(CURDIR)/$(PY_VENV)/bin:$$PATH" CARGO_TARGET_DIR=$(PY_TARGET) $(PY) -m pip install --quiet \
		--disable-pip-version-check --no-build-isolation --no-deps --force-reinstall ./python

# The stamp is written last, so that a half-made environment is made again. Debian's python3
# lacks venv until python3-venv is installed (as test-deps installs Chromium).
$(PY_VENV)/.tools:
	rm -rf $(PY_VENV)
	@$(PYTHON) -m venv $(PY_VENV) || { \
		echo "python3 -m venv failed: installing python3-venv"; rm -rf $(PY_VENV); \
		if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; \
		else sudo apt-get update -qq && sudo apt-get install -y -qq python3-venv >/dev/null; fi && \
		$(PYTHON) -m venv $(PY_VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check "maturin==1.16.0" "numpy>=1.21" pytest
	touch $@

python-test: python python-milvus-env python-ray-env
	MILAN_REQUIRE_MILVUS=$$(test -f $(PY_VENV)/.milvus && echo 1) \
	MILAN_REQUIRE_RAY=$$(test -f $(PY_VENV)/.ray && echo 1) $(PY) -m pytest -q -rs python/tests

## python-milvus-env: Milvus Lite and pymilvus, pinned, for the Milvus tests only (the package
## itself never needs them), installed once into the package's environment (a stamp; pip's
## cache keeps the wheels): about 285 MB, 26 s from PyPI on an idle machine. Milvus Lite 2.5.1 still imports pkg_resources, gone from setuptools
## 81. A failed install is reported and leaves those tests to skip, saying why; after a good
## one they must run.
MILVUS_PINS := "milvus-lite==2.5.1" "pymilvus==2.5.18" "setuptools<81"

python-milvus-env: $(PY_VENV)/.milvus

$(PY_VENV)/.milvus: $(PY_VENV)/.tools
	@$(PY) -m pip install --quiet --disable-pip-version-check $(MILVUS_PINS) && touch $@ || \
		echo "python-milvus-env: Milvus Lite could not be installed; the Milvus tests will skip"

## python-ray-env: Ray Data, pinned, for the sharded ingest (`milan.ray`) and its tests only,
## installed once into the package's environment (a stamp; pip's cache keeps the wheels): about
## 240 MB of Ray and its data dependencies. A failed install is reported and leaves those tests to
## skip, saying why; after a good one they must run.
RAY_PINS := "ray[data]==2.60.0"

python-ray-env: $(PY_VENV)/.ray

$(PY_VENV)/.ray: $(PY_VENV)/.tools
	@$(PY) -m pip install --quiet --disable-pip-version-check $(RAY_PINS) && touch $@ || \
		echo "python-ray-env: Ray could not be installed; the Ray tests will skip"

## bench: the 1,000,000-code workload of docs/benchmarks.md (about two minutes).
bench: $(MILAN)
	@mkdir -p $(BENCH)
	$(MILAN) bench generate --bits 64 --count 1000000 --centres 1000 --flip 0.12 --seed 1 \
		--out $(BENCH)/codes.npy --queries 1000 --queries-out $(BENCH)/queries.npy
	rm -rf $(BENCH)/index
	$(MILAN) index create $(BENCH)/index --bits 64
	$(MILAN) index import $(BENCH)/index --codes $(BENCH)/codes.npy --quiet
	$(MILAN) bench search $(BENCH)/index --codes $(BENCH)/queries.npy --top-k 20 --radius 2,4,8

## bench-compare: milan, FAISS and mih-rs side by side (see benches/compare/README.md).
bench-compare:
	bash benches/compare/run.sh
