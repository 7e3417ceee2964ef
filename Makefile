# The commands README names. `make demo` and `make test` each do all set-up.
VENV ?= .venv
PY := $(VENV)/bin/python
CNNC := $(VENV)/bin/cnnc
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

# Re-run pip only when pyproject.toml changes; torch/torchvision resolve from the
# local wheels (pip's cap), everything else from PyPI.
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

demo: install
	$(CNNC) submit configs/demo.yaml --no-report
	$(CNNC) report runs/latest

test: install
	$(PY) -m pytest -q --durations=15

test-fast: install
	$(PY) -m pytest -q -m "not slow and not slurm"

bench: install
	$(PY) bench/train_throughput.py

clean:
	rm -rf runs .pytest_cache
