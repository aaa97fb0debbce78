# Two commands a newcomer needs: `make serve` (set up, index seeds/, serve) and `make test`.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup test serve lint clean browser

setup: $(STAMP)

# torch first, pinned to the CPU build that lies on disk: an unpinned torch, pulled in by
# sentence-transformers, would download a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[all,dev,ray]'
	touch $(STAMP)

# Where `make serve` keeps its collection (data/ is git-ignored) and the port it serves on.
COLLECTION ?= data/collection
PORT       ?= 8000

# Indexing is a no-op for articles already indexed unchanged, so this also refreshes a
# stale collection after seeds/ changed.
serve: setup
	$(BIN)/retrieval index seeds/ --collection $(COLLECTION) --quiet
	$(BIN)/retrieval serve --collection $(COLLECTION) --port $(PORT)

test: setup
	$(BIN)/python -m pytest

# The page test drives Debian's chromium through chromedriver; installed only if missing
# (as root, or with sudo). Without them the page test skips and says why.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium chromium-driver >/dev/null; }

# ruff and mypy (strict), then the layers written in pyproject.toml (import-linter).
lint: setup
	$(BIN)/ruff check retrieval service tests scripts
	$(BIN)/mypy retrieval service
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
