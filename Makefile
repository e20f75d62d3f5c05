# Two commands are the contract: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
LTRR   := $(VENV)/bin/ltrr
STAMP  := $(VENV)/.ltrr-installed
# pyserini needs torch>=2.9. Installing the CPU build first keeps pip from pulling a
# multi-GB CUDA build; override on other platforms, e.g. TORCH="torch==2.9.1".
TORCH  ?= torch==2.13.0

.PHONY: demo test bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
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
