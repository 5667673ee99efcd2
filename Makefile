# automtl: developer entry points. `make install` then `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch==2.13.0 is pinned in setup.cfg: its CPU wheel installs without pulling CUDA.

.PHONY: install test lint proto check-proto clean

install: $(BIN)/automtl

$(BIN)/automtl: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

test: install
	$(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check automtl_cli tests scripts

# Regenerate the protobuf module from proto/automtl.proto (needs the `proto` extra).
proto:
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=automtl_cli/proto proto/automtl.proto

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
