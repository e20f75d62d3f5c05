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
# constraints.txt pins every dependency (torch aside: TORCH above) to the version the tests
# passed with; `make lock` refreshes it. A `-c` given here adds to a constraint file set in
# pip's configuration (pip merges list options from config and command line), it does
# not replace it.
LOCK   := constraints.txt
LOCK_VENV ?= .venv-lock
LOCK_TESTS ?=

.PHONY: demo test bench docs install lock clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK) Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" -c $(LOCK) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[all,dev]" -c $(LOCK)
	@touch $(STAMP)

# Resolve the newest versions pyproject.toml allows in a fresh venv, run the tests there
# (LOCK_TESTS: pytest arguments, default the whole suite) and, only if they pass, write
# what is installed to constraints.txt (ltrr itself, pip and torch left out).
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(LOCK_VENV)/bin/python -m pip install --quiet -e ".[all,dev]"
	$(LOCK_VENV)/bin/python -m pytest $(LOCK_TESTS)
	{ echo "# Versions the tests passed with; make install uses them. Regenerate: make lock"; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable \
	  | grep -vE '^(pip|torch)==' | sed -E 's/^([^=]+==[^+]+)\+.*$$/\1/'; } > $(LOCK).tmp
	@! grep -n ' @ ' $(LOCK).tmp || { echo "error: a package installed from a URL cannot be locked"; exit 1; }
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)

demo: $(STAMP)
	$(LTRR) validate pipelines/music.yaml
	$(LTRR) index pipelines/music.yaml
	$(LTRR) run pipelines/music.yaml -q "britney spears" -q "metalica" -q "french hip hop"

# Two workers, each file on one (module fixtures stay whole): the suite waits on servers
# and subprocesses as much as it computes. TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# Regenerate every command output shown in the docs (tests check the fast ones).
docs: $(STAMP)
	$(PY) scripts/gen_doc_outputs.py

clean:
	rm -rf $(VENV) $(LOCK_VENV) .ltrr pipelines/.ltrr examples/.ltrr
