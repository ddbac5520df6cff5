# `make book` builds the whole book at the quick profile into _build/html;
# `make test` runs the test suite. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?= $(or $(STDYN_PROFILE),quick)

.PHONY: book test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/python -m stdyn.book --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf _build
