# Two commands matter: `make run` and `make test`. Both set up what is missing first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup run test lint fmt bench clean

# Always run: the script checks each step and does only what is missing (about 1 s when
# nothing is), and some of it (tracefs, header links) does not survive a reboot.
setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/vigil run $(ARGS)

test: setup
	bash scripts/run-tests.sh $(ARGS)

lint: setup
	$(VENV)/bin/ruff check agent tests bench
	$(VENV)/bin/ruff format --check agent
	$(VENV)/bin/mypy agent

fmt: setup
	$(VENV)/bin/ruff format agent tests bench
	$(VENV)/bin/ruff check --fix agent tests bench

bench: setup
	bash bench/run-all.sh

clean:
	rm -rf $(VENV) .venv-servers build .pytest_cache .mypy_cache .ruff_cache
