# Every target sets up its own virtual environment on a fresh machine.
#
# torch is installed first, at $(TORCH), from the index pip is configured with (PyPI's Linux wheel is
# the CUDA build, which is what a GPU user wants; on a CPU-only machine pass
# TORCH_INDEX=https://download.pytorch.org/whl/cpu to get the small CPU build). It is then written
# to a constraints file, so that no later install can replace it with another build or version.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
PEERS := philtorch==0.6.0 torchcomp accelerated-scan
CLIENT_SUITES := torchlpc==0.7.2 torchcomp==0.2.1
# The GPU machines run Triton 3.6, whose compiler rewrites some products into TF32 dots that newer
# Triton leaves alone: the sm_90 compile check also runs against it (tests/test_triton_compile.py).
TRITON_GPU ?= triton==3.6.0

.PHONY: venv test test-all demo bench model clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -c "import torch; print(torch.__version__)" | sed 's/^/torch==/' > $(VENV)/constraints.txt
	$(BIN)/pip install -q -c $(VENV)/constraints.txt -e ".[test,examples,bench]"
	@# peers for parity tests and benchmarks: optional, skipped with a reason when missing
	$(BIN)/pip install -q -c $(VENV)/constraints.txt --no-build-isolation torchlpc \
		|| echo "torchlpc could not be built: its parity tests and benchmarks will be skipped"
	$(BIN)/pip install -q --no-deps $(PEERS) || echo "some optional peers could not be installed"
	@# torchlpc's and torchcomp's own test suites, run against our drop-in by tests/test_client_suites.py
	for release in $(CLIENT_SUITES); do \
		$(BIN)/pip download -q --no-deps --no-binary :all: --no-build-isolation $$release -d $(VENV)/peers \
		&& tar -xzf $(VENV)/peers/$$(echo $$release | sed 's/==/-/').tar.gz -C $(VENV)/peers \
		|| echo "$$release's source release could not be fetched: its suite will be skipped"; \
	done
	$(BIN)/pip install -q --no-deps --target $(VENV)/triton36 "$(TRITON_GPU)" \
		|| echo "$(TRITON_GPU) could not be installed: its compile check will be skipped"
	touch $@

venv: $(VENV)/.installed

# make test: every kernel and path, under 6 minutes on two cores; make test-all (CI) adds the tests
# marked slow: the sm_90 compile checks, the peers' own suites and the rest of the kernel matrices
test: venv
	$(BIN)/pytest -n 2 --dist worksteal --durations=15 -m "not slow" tests

test-all: venv
	$(BIN)/pytest -n 2 --dist worksteal --durations=15 tests

demo: venv
	$(BIN)/python examples/fit_phaser.py

bench: venv
	$(BIN)/allpole-bench --device cpu --quick --out bench/out

# MEASURED=bench/results/<gpu>/results.csv: a GPU session's times beside the predictions, written there
model: venv
	env -u TRITON_INTERPRET $(if $(wildcard $(VENV)/triton36/triton),PYTHONPATH=$(VENV)/triton36) \
		$(BIN)/allpole-bench --model $(if $(MEASURED),--measured $(MEASURED) --out $(dir $(MEASURED)),--out bench/out)

clean:
	rm -rf $(VENV) build *.egg-info
