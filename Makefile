# Every target sets up its own virtual environment on a fresh machine.
# torch is pinned to the CPU build (a constraint for every later install) so nothing pulls CUDA wheels.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
PEERS := philtorch==0.6.0 torchcomp accelerated-scan

.PHONY: venv test demo bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)"
	echo "$(TORCH)" > $(VENV)/constraints.txt
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e ".[test,examples,bench]"
	@# peers for parity tests and benchmarks: optional, skipped with a reason when missing
	$(BIN)/pip install -q -c $(VENV)/constraints.txt --no-build-isolation torchlpc \
		|| echo "torchlpc could not be built: its parity tests and benchmarks will be skipped"
	$(BIN)/pip install -q --no-deps $(PEERS) || echo "some optional peers could not be installed"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(BIN)/pytest tests

demo: venv
	$(BIN)/python examples/fit_phaser.py

bench: venv
	$(BIN)/allpole-bench --device cpu --quick --out bench/out

clean:
	rm -rf $(VENV) build *.egg-info
