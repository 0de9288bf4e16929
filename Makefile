# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test lint install install-test clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: install
	$(VENV)/bin/imlscan scan examples/*.jpg --out outputs --overlay --mask --html

test: install-test
	$(PY) -m pytest -q

lint: install-test
	$(VENV)/bin/ruff check imlscan tests tools
	$(VENV)/bin/ruff format --check imlscan tests tools

clean:
	rm -rf $(VENV) outputs .pytest_cache
