# `make run`: set up and run the default experiment.  `make test`: set up and run the tests.
# Extra Hydra overrides for `make run`: make run ARGS="method=vanilla seed=1"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kdexp-installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
ARGS ?=

.PHONY: run test test-all data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# These two pins install from the local disk on the project's machines.
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	# MovieLens-100K for task=ranking: the example data inside recbole (data only: --no-deps, never imported)
	$(BIN)/python -m pip install -q --no-deps recbole==1.2.1
	touch $(STAMP)

# Fashion-MNIST: Debian's package where we are root with apt-get, else torchvision's download.
data: $(STAMP)
	@if [ -f $(FMNIST) ] || [ -f data/FashionMNIST/raw/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST present"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist; \
	else \
		$(BIN)/python -c "from torchvision.datasets import FashionMNIST; FashionMNIST('data', download=True)"; \
	fi

run: $(STAMP) data
	$(BIN)/kdexp $(ARGS)

test: $(STAMP) data  ## lint-imports first: kdexp's floors only look down (docs/architecture.md)
	$(BIN)/lint-imports && $(BIN)/python -m pytest -q -n 2

test-all: $(STAMP) data  ## includes the slow tests
	$(BIN)/lint-imports && $(BIN)/python -m pytest -q -n 2 -m ''

clean:
	rm -rf $(VENV) .pytest_cache
