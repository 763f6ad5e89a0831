# wan_pipeline — the two set-up commands of the README, plus the UI.
# Every target creates the virtual environment and installs the project on first use.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STORY   ?= stories/launch_day.yaml
PRESET  ?= preview
PORT    ?= 3000
export DAGSTER_HOME ?= $(CURDIR)/storage

.PHONY: install demo test ui screenshots clean-outputs

$(BIN)/wan-pipeline: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

install: $(BIN)/wan-pipeline

## Render the demo story with the preview preset (CPU, no weights): storage/outputs/launch_day/preview/film.mp4
demo: install
	$(BIN)/wan-pipeline render $(STORY) --preset $(PRESET)

## Lint and format check (ruff), then the test suite (CPU, no network, no GPU); skip reasons shown
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -rs

## Open the Dagster UI on http://127.0.0.1:$(PORT) (instance in storage/); `make ui PORT=3001` for another port
ui: install
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $(PORT)

## Refresh docs/screenshots/*.png with the browser test (needs /usr/bin/chromium)
screenshots: install
	WAN_PIPELINE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/e2e -q -m e2e

clean-outputs:
	rm -rf storage/outputs
