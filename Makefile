# Benchmarks (BENCHMARKS.md). The full runs are for people: each prints a table and
# writes JSON + Markdown under bench/results/. `make bench-smoke` is what CI runs.
PY ?= .venv/bin/python
BENCH = $(PY) -m loadtests.bench

.PHONY: test bench bench-smoke bench-codec bench-capacity bench-ttfa bench-e2e bench-memory

test:
	bash scripts/test.sh

# capacity measures the codec limit in the same run; memory includes the 10-minute soak
bench:
	$(BENCH) all

bench-smoke:
	$(BENCH) all --smoke

bench-codec bench-capacity bench-ttfa bench-e2e bench-memory:
	$(BENCH) $(@:bench-%=%)
