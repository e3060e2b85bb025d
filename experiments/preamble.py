"""What every script in experiments/ does first, before JAX or TensorFlow load.

SIGINT and SIGTERM are blocked here, so that every thread JAX and TensorFlow
start inherits the mask and the signals wait for `mrmc_jax.runner.cli`'s
watcher thread (docs/reliability.md); TensorFlow's C++ logging and oneDNN
notices are off unless the environment says otherwise. Imported as the
scripts' first line (`import preamble`): the scripts' folder is the first
entry of `sys.path` when one of them runs.
"""

import os
import signal

signal.signal(signal.SIGINT, signal.default_int_handler)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
