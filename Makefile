# miro: two commands on a fresh machine — `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
REFERENCE := $(VENV)/reference/.installed

# The known-good torch/torchvision pair per architecture (see README, "Install").
ARCH := $(shell uname -m)
ifeq ($(ARCH),x86_64)
TORCH := torch==2.14.1 torchvision==0.29.1
else
TORCH := torch==2.9.1 torchvision==0.24.1
endif

export NO_ALBUMENTATIONS_UPDATE := 1
export HF_HUB_OFFLINE := 1

.PHONY: install reference chromium demo demo-quick check test lint format bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,ray,s3]"
	$(BIN)/python -m pip check
	touch $(STAMP)

install: $(STAMP)

# Reference reward implementations for the parity tests: --no-deps, outside site-packages.
$(REFERENCE): $(STAMP) tests/reference/requirements.txt
	rm -rf $(VENV)/reference
	$(BIN)/python -m pip install -q --no-deps --target $(VENV)/reference -r tests/reference/requirements.txt
	touch $(REFERENCE)

reference: $(REFERENCE)

# The browser the `miro serve` tests drive through Playwright (Debian's; never a download).
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
$(CHROMIUM):
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

chromium: $(CHROMIUM)

demo: install
	bash scripts/demo.sh demo

demo-quick: install
	QUICK=1 bash scripts/demo.sh demo-quick

# What CI enforces before the tests: lint, formatting and types.
check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: check $(REFERENCE) $(CHROMIUM)
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix . && $(BIN)/ruff format .

bench: install
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_malloc.py
	$(BIN)/python benchmarks/bench_serve.py

clean:
	rm -rf demo demo-quick .pytest_cache
