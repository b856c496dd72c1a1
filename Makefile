# qbit-consumer. `make run` runs the service; `make test` sets everything up and runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Test processes side by side: the live tests mostly wait on real services, not on the CPU.
TEST_WORKERS ?= 3

.PHONY: install run check image test lint format clean demo fuzz faults bench bench-poll bench-latency bench-history bench-container

$(BIN)/.installed: setup.cfg setup.py
	@scripts/bootstrap-venv.sh $(PYTHON) $(VENV)
	@touch $@

install: $(BIN)/.installed

config.ini:
	@cp config.example.ini config.ini
	@echo "note: created config.ini from config.example.ini; set [qbittorrent] url and password (or QBIT_CONSUMER_QBITTORRENT_PASSWORD)"

# `make run CONFIG=other.ini` runs with another file (only config.ini is created when absent).
CONFIG ?= config.ini

run: install $(filter config.ini,$(CONFIG))
	$(BIN)/qbit-consumer run --config $(CONFIG)

demo: install
	@command -v qbittorrent-nox >/dev/null || scripts/ensure-services.sh
	$(BIN)/python scripts/demo.py

check: install $(filter config.ini,$(CONFIG))
	$(BIN)/qbit-consumer check --config $(CONFIG)

# The image, with docker or podman (whichever this machine has): qbit-consumer:<version> and :latest.
image:
	@scripts/image.sh

# The tests that change the whole broker (marked serial) run alone, after the others. The image
# the container tests run is built first, from this tree.
test: install
	@scripts/ensure-services.sh
	@scripts/image.sh qbit-consumer:test
	$(BIN)/ruff check qbit_consumer tests bench scripts
	$(BIN)/pytest -n $(TEST_WORKERS) -m "not serial"
	$(BIN)/pytest -m serial

# At least 10,000 generated command bodies through the real service (results: docs/reliability.md).
fuzz: install
	@scripts/ensure-services.sh
	HYPOTHESIS_PROFILE=long $(BIN)/pytest tests/test_fuzz.py -s -o timeout=0

# Fault injection at full scale (figures: docs/reliability.md); a small scale runs in `make test`.
faults: install
	@scripts/ensure-services.sh
	rm -f faults-report.jsonl
	FAULTS_SCALE=full FAULTS_REPORT=faults-report.jsonl $(BIN)/pytest tests/faults -s -o timeout=0
	@cat faults-report.jsonl

lint: install
	$(BIN)/ruff check qbit_consumer tests bench scripts
	$(BIN)/ruff format --check qbit_consumer tests bench scripts

format: install
	$(BIN)/ruff format qbit_consumer tests bench scripts
	$(BIN)/ruff check --fix qbit_consumer tests bench scripts

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache

# Benchmarks (real qbittorrent-nox and RabbitMQ; results in docs/benchmarks.md).
bench: install
	@scripts/ensure-services.sh
	$(BIN)/pip install --quiet -e '.[test,bench]' 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -m bench.run

bench-poll: install
	$(BIN)/python -m bench.poll_cost --sizes 1000,5000

bench-latency: install
	$(BIN)/python -m bench.completion_latency --downloads 5 --interval 1

bench-history: install
	$(BIN)/python -m bench.history

# The image on a NAS: its size, a health probe's cost, 10,000 tracked under --memory 128m
# (docs/benchmarks-container.md).
bench-container: install
	@scripts/ensure-services.sh
	$(BIN)/python -m bench.container
