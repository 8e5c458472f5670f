# The two README commands are `make demo` and `make test`; both install what they need first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Two cores here; xdist workers beyond that mostly wait on the kernel, which is where our tests spend time.
WORKERS ?= 4

.PHONY: install install-test demo test bench clean

install:
	@scripts/install.sh

install-test:
	@scripts/install.sh test

demo: install
	@$(PY) -m pynet.demo

test: install-test
	@$(VENV)/bin/python -m pytest -n $(WORKERS) -q tests

bench: install
	@$(PY) bench/bench.py

# runtime-tools' validation suite, runc vs pynet-oci (needs Go and the upstream source: not part of `test`).
.PHONY: oci-validation
oci-validation: install-test
	@scripts/oci-validation.sh

clean:
	rm -rf $(VENV) build *.egg-info
