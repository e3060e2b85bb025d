"""The command line every script in experiments/ shares.

`main(job, config_help)` defines `--config` and `--workdir` (`define_flags`),
then runs the job (`module:function`, imported only after the flags are
parsed, so that `--help` answers without loading JAX and TensorFlow) through
`cli.run`, and ends the process through `cli.exit_process`.
"""

import warnings

from absl import app
from absl import flags
from ml_collections import config_flags

from mrmc_jax.runner import cli


def define_flags(config_help: str) -> None:
  """Defines the required `--config` (a config file) and `--workdir`."""
  flags.DEFINE_string("workdir", None,
                      "Directory for checkpoints and outputs.")
  config_flags.DEFINE_config_file("config", None, config_help,
                                  lock_config=True)
  flags.mark_flags_as_required(["config", "workdir"])


def main(job: str, config_help: str) -> None:
  """Parses the flags and runs `job` ("package.module:function")."""
  define_flags(config_help)
  # A deprecated spelling (a flat option name) is said on the console, once
  # (Python shows DeprecationWarnings of __main__ only).
  warnings.filterwarnings("default", category=DeprecationWarning,
                          module=r"mrmc_jax(\.|$)")

  def run(argv):
    if len(argv) > 1:
      raise app.UsageError("Too many command-line arguments.")
    import importlib  # pylint: disable=g-import-not-at-top
    module, _, name = job.partition(":")
    fn = getattr(importlib.import_module(module), name)
    cli.run(fn, flags.FLAGS.config, flags.FLAGS.workdir)
    cli.exit_process(0)  # 130/143 if a signal came while it shut down.

  app.run(run, flags_parser=cli.parse_flags)
