# Set-up is incremental: the virtual environment is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Every extra that installs on a CPU machine; `tensorrt` needs NVIDIA's own index and a GPU.
EXTRAS := dali,serve,bench,dev,web
STAMP := $(VENV)/.installed
DEMO_DIR ?= data/synthetic
DEMO_RUN ?= runs/synthetic
# 1,000 training videos of 2-8 glosses from a 30-gloss vocabulary, 12 training signers, 4 held out.
DEMO_VIDEOS ?= 1250

.PHONY: demo test test-fast lint clean sclite chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[$(EXTRAS)]'
	touch $@

demo: $(STAMP)
	$(BIN)/qslr -v data synth --out $(DEMO_DIR) --videos $(DEMO_VIDEOS) --vocab 30 --max-glosses 8 --overwrite
	rm -rf $(DEMO_RUN)
	$(BIN)/qslr -v train --config synthetic data.root=$(DEMO_DIR) train.work_dir=$(DEMO_RUN)
	$(BIN)/qslr eval run --checkpoint $(DEMO_RUN)/checkpoints/best.pt --split test
	$(BIN)/qslr triton build --checkpoint $(DEMO_RUN)/checkpoints/best.pt --out $(DEMO_RUN)/triton --overwrite
	@echo "references:" && head -n 5 $(DEMO_DIR)/test.stm | cut -d' ' -f1,6-
	$(BIN)/qslr infer --serve $(DEMO_RUN)/triton $(DEMO_DIR)/videos/test/synth-test-0000[0-4].webm

# NIST sclite (Debian's sctk) is the reference the scorer's tests compare against.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
sclite:
	@test -x /usr/lib/sctk/bin/sclite || command -v sclite >/dev/null || { \
		echo "installing Debian's sctk (NIST sclite)"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sctk >/dev/null; }

# Debian's chromium is the real browser the web page's test drives (Playwright never downloads one here).
chromium:
	@test -x /usr/bin/chromium || { \
		echo "installing Debian's chromium"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) sclite chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest --durations=15

# The edit-test loop: every test but those marked slow (over about 1.5 s each on the 2-core machine: torchrun, the
# preset matrix, servers, exports, the wheel, the browser). `make test` and CI run them all.
test-fast: $(STAMP) sclite chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "not slow" --durations=10

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
