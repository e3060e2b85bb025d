"""What every `experiments/*.py` entry point does around its one call.

Each script defines `--config` and `--workdir` (both required), parses them
with `parse_flags` (`app.run(main, flags_parser=cli.parse_flags)`) and calls
`run(job, config, workdir)`, which quiets logging (unless `--verbosity` is
given), hides accelerators from TensorFlow (it only feeds data), starts JAX's
multi-controller runtime when the config asks for it, and runs the job.

Exit status (docs/reliability.md), the same for every script:
  0    the job finished.
  2    a usage error or bad input: bad or missing flags, an unknown config
       file or preset, a bad config value, unreadable data, a workdir that
       is a file, read-only, in use or of another run. One line
       `error: ...` on stderr, and a workdir that existed is untouched.
  130  interrupted (Ctrl-C, SIGINT); 143 terminated (SIGTERM). One line on
       stderr; the run resumes from its last checkpoint when rerun.
Anything else is a bug and exits 1 with its traceback.
"""

import signal
import sys
from typing import Any, Callable

from absl import flags
from absl import logging

USAGE_ERROR = 2
INTERRUPTED = 130
TERMINATED = 143


def _fail(message: str, code: int = USAGE_ERROR):
  # One line, even when absl or a library wraps its message over several.
  line = " ".join(message.split())
  sys.stderr.write(f"error: {line}\n")
  sys.stderr.flush()
  sys.exit(code)


def parse_flags(argv: list[str]) -> list[str]:
  """`app.run`'s flags parser: a parse error is one line and exit status 2.

  The config file is loaded while parsing, so an unknown file, preset word
  or field override is reported here too.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(str(e))
  except (ValueError, KeyError, AttributeError, TypeError, OSError) as e:
    # A config file's get_config(arg) refusing its argument.
    _fail(f"--config: {e}")


class _Terminated(BaseException):
  """Raised in the main thread on SIGTERM."""


def _on_sigterm(signum, frame):
  del signum, frame
  raise _Terminated()


def run(job: Callable[[Any, str], Any], config: Any, workdir: str) -> Any:
  """Runs `job(config, workdir)` with the shared setup and exit statuses."""
  # Orbax logs every checkpoint file at INFO; keep the console to progress
  # bars, warnings and the result table unless --verbosity asks for more.
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  signal.signal(signal.SIGTERM, _on_sigterm)
  try:
    import jax  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], "GPU")
    dist = config.get("distributed")
    if dist is not None and dist.initialize:
      # None values let JAX detect the cluster (TPU pods, SLURM, Open MPI).
      jax.distributed.initialize(
          coordinator_address=dist.coordinator_address,
          num_processes=dist.num_processes, process_id=dist.process_id)
    logging.info("JAX process %d/%d, %d devices.", jax.process_index(),
                 jax.process_count(), jax.device_count())
    return job(config, workdir)
  except (ValueError, OSError) as e:
    # Bad input (FileNotFoundError and PermissionError are OSErrors): one
    # line, non-zero exit, nothing in a pre-existing workdir touched.
    msg = str(e)
    if isinstance(e, OSError) and e.filename and e.filename not in msg:
      msg = f"{e.filename}: {msg}"
    _fail(msg)
  except KeyboardInterrupt:
    _fail("interrupted; rerun the same command to resume.", INTERRUPTED)
  except _Terminated:
    _fail("terminated; rerun the same command to resume.", TERMINATED)
