# The README's two commands. Each sets up everything it needs on a fresh machine.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
FASHION := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz

.PHONY: demo test lint docs install data

$(BIN)/sddpx-tp: pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || { echo "make: '$(PYTHON)' cannot create a virtual environment \
	(import ensurepip, venv failed): run 'apt-get install python3-venv' on Debian/Ubuntu, or pass PYTHON=/path/to/python3.11+" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,ray,docs,timm]"
	touch $@

install: $(BIN)/sddpx-tp

# Fashion-MNIST from Debian (offline-friendly); skipped where apt is missing (the demo then downloads it).
data:
	@if [ ! -f $(FASHION) ] && command -v apt-get >/dev/null; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

demo: install data
	$(BIN)/sddpx-tp demo --force

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The documentation site, built strictly (a broken link or docstring fails it) into site/ (ignored by git).
# NO_MKDOCS_2_WARNING: Material's notice about MkDocs 2, not a warning about these docs.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

test: install data lint docs
	$(BIN)/pytest -q -n 2 --durations=20
