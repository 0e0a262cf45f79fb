# The two commands a new user needs: `make demo` and `make test`.
# Each creates the virtual environment (.venv) when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean fashion-mnist docs

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --constraint constraints.txt --editable '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/autocompress search experiments/digits/spec.yaml

# The joint search on real data: the shipped Fashion-MNIST reference, half of the test set held out.
# Needs the data set (apt-get install dataset-fashion-mnist, or --set data.root=... by hand).
fashion-mnist: $(STAMP)
	$(BIN)/autocompress search experiments/fashion_mnist/joint.yaml

# Static checks first (ruff: pyflakes, bugbear, pylint's errors), then the tests: two worker
# processes, one a core (pytest-xdist); the Ray tests share one of them (--dist loadgroup).
test: $(STAMP)
	$(BIN)/ruff check autocompress tests .ci
	$(BIN)/python -m pytest -n 2 --dist loadgroup

# The documentation site (docs/, MkDocs Material) into site/: the references generated from the
# code first, then the build with warnings as errors (tests/test_docs.py builds it too).
docs: $(STAMP)
	$(BIN)/python docs/generate.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache experiments/digits/runs site
