# milan: `make demo` runs the main job end to end; `make test` runs every check CI runs.

CARGO ?= cargo
MILAN := target/release/milan
DEMO := target/demo
FUZZ_SECONDS ?= 30
FUZZ_TARGETS := decode_records open_damaged model_ops
BENCH := target/bench

.PHONY: demo test check lint unit fuzz fuzz-tools bench bench-compare clean-demo

## demo: builds milan, makes 200,000 synthetic 64-bit codes, indexes them and queries them.
demo: $(MILAN)
	@rm -rf $(DEMO) && mkdir -p $(DEMO)
	@echo "== generating 200,000 64-bit codes around 200 centres, and 5 queries"
	$(MILAN) bench generate --bits 64 --count 200000 --centres 200 --flip 0.12 --seed 7 \
		--out $(DEMO)/codes.npy --queries 5 --queries-out $(DEMO)/queries.npy
	@echo "== creating and filling the index"
	$(MILAN) index create $(DEMO)/index --bits 64 --expected-size 200000
	$(MILAN) index import $(DEMO)/index --codes $(DEMO)/codes.npy --quiet
	$(MILAN) index info $(DEMO)/index
	$(MILAN) index check $(DEMO)/index
	@echo "== the 5 nearest codes to each query, as JSON lines"
	$(MILAN) query $(DEMO)/index --codes $(DEMO)/queries.npy --top-k 5 --json
	@echo "== everything within 6 bits of stored id 42"
	$(MILAN) query $(DEMO)/index --id 42 --radius 6
	@echo "== search speed against a linear scan (one thread)"
	$(MILAN) bench search $(DEMO)/index --codes $(DEMO)/queries.npy --top-k 20 --radius 2,4,8
	@echo "done: the index is in $(DEMO)/index"

$(MILAN): FORCE
	$(CARGO) build --release --locked

FORCE:

## test: formatting, lints, every test, docs, and a short run of every fuzz target.
test: lint unit fuzz

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps --workspace

unit:
	$(CARGO) test --locked --workspace

fuzz-tools:
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

# cargo-fuzz needs nightly flags; RUSTC_BOOTSTRAP lets this stable toolchain accept them.
fuzz: fuzz-tools
	cd fuzz && for target in $(FUZZ_TARGETS); do \
		RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $$target -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

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
