# Two commands are the contract: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
LTRR   := $(VENV)/bin/ltrr
STAMP  := $(VENV)/.ltrr-installed
# pyserini needs torch>=2.9 (ltrr's BM25 never calls it). Installing it first, pinned,
# keeps the resolver from choosing a release on its own. On this project's machines
# torch==2.13.0 resolves to a CPU build; elsewhere point TORCH_INDEX at PyTorch's CPU
# wheel index to avoid a multi-GB CUDA build, or override TORCH (e.g. torch==2.9.1).
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: demo test bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

demo: $(STAMP)
	$(LTRR) validate pipelines/music.yaml
	$(LTRR) index pipelines/music.yaml
	$(LTRR) run pipelines/music.yaml -q "britney spears" -q "metalica" -q "french hip hop"

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) .ltrr pipelines/.ltrr examples/.ltrr
