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
       Also a full disk or a storage that stops answering mid-run (one
       line, no library traceback; rerun to resume).
  130  interrupted (Ctrl-C, SIGINT); 143 terminated (SIGTERM). One line on
       stderr; the run resumes from its last checkpoint when rerun.
Anything else is a bug and exits 1 with its traceback.

Signals: each script blocks SIGINT and SIGTERM in its first lines, before
JAX or TensorFlow is imported, so every thread those libraries start
inherits the block and no library code ever sees a `KeyboardInterrupt` (a
JAX or garbage-collector callback used to swallow one, and the run then
finished with exit status 0). `parse_flags` starts a watcher thread that
takes the signals with `sigwait`: it records the first one, which the epoch
loop checks at every step (`check_interrupt`) and stops with one line; if
no step comes within `GRACE_SECONDS` (loading data, compiling, saving), or
at a second signal, the watcher prints the line and ends the process at
once. Every workdir write is atomic, so that is as safe as a kill -9, and
the rerun resumes alike.

On a multi-process job SIGTERM is a preemption notice for every host: the
watcher re-raises it in its own thread, with SIGTERM unblocked there only,
so that JAX's preemption notifier (a C++ SIGTERM handler installed by
`jax.distributed.initialize`) sees it and tells the other hosts; all hosts
then save at the same step (orbax's `reached_preemption`) and exit 143
(`waits_for_sync_point`). Its grace is `PREEMPTION_GRACE_SECONDS`.

A script's process ends through `exit_process`, which runs the exit
handlers first and then takes the exit status under the watcher's lock: a
signal that arrives after the last write, while the process shuts down,
still gives 130/143.
"""

import atexit
import errno
import logging as std_logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from typing import Any, Callable, Optional

from absl import flags
from absl import logging

USAGE_ERROR = 2
INTERRUPTED = 130
TERMINATED = 143


# Seconds the watcher waits for the epoch loop to stop at a step before it
# ends the process itself.
GRACE_SECONDS = 3.0
# The same on a multi-process job for a SIGTERM handed to JAX's preemption
# notifier: the hosts agree on a step first (a step or two), then save.
PREEMPTION_GRACE_SECONDS = 60.0
# Sent by `exit_process` to the watcher thread alone, to wake it.
_WAKE = signal.SIGUSR2
_SIGNALS = {signal.SIGINT: (INTERRUPTED, "interrupted"),
            signal.SIGTERM: (TERMINATED, "terminated")}
# The first signal taken by the watcher; whether the one line was written;
# the run's temporary folder.
# Whether SIGTERM goes to JAX's preemption notifier (`forward_sigterm`);
# whether the process is ending (`finished`: the exit status is taken).
_state: dict[str, Any] = {"signum": None, "reported": False, "tmpdir": None,
                          "watcher": None, "forward_sigterm": False,
                          "finished": False, "woken": None}
_report_lock = threading.Lock()


class Interrupted(BaseException):
  """Raised at a step boundary after SIGINT or SIGTERM (not an Exception, so
  that no `except Exception` on the way up can swallow it)."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum


def _signal_line(signum: int) -> tuple[str, int]:
  code, word = _SIGNALS[signum]
  return f"{word}; rerun the same command to resume.", code


def _report(message: str) -> bool:
  """Writes the one `error:` line unless it was written; True if written."""
  with _report_lock:
    # Only the watcher races the main thread; without it (a test calling
    # `run` in-process) every call reports.
    if _state["reported"] and _state["watcher"] is not None:
      return False
    _state["reported"] = True
  line = " ".join(message.split())
  try:
    sys.stderr.write(f"error: {line}\n")
    sys.stderr.flush()
  except (OSError, ValueError):
    pass
  return True


def _fail(message: str, code: int = USAGE_ERROR):
  # One line, even when absl or a library wraps its message over several.
  _report(message)
  sys.exit(code)


_TMP_PREFIX = "mrmc-run-"


def _remove_stale_tmpdirs() -> None:
  """Removes the temporary folders of runs that were killed (kill -9)."""
  root = tempfile.gettempdir()
  try:
    names = os.listdir(root)
  except OSError:
    return
  for name in names:
    pid = name[len(_TMP_PREFIX):].split("-")[0]
    if not name.startswith(_TMP_PREFIX) or not pid.isdigit():
      continue
    try:
      os.kill(int(pid), 0)
      continue  # Alive (or another user's): not ours to remove.
    except ProcessLookupError:
      pass
    except OSError:
      continue
    path = os.path.join(root, name)
    if os.path.isdir(path) and os.stat(path).st_uid == os.getuid():
      shutil.rmtree(path, ignore_errors=True)


def _remove_tmpdir() -> None:
  tmp = _state["tmpdir"]
  if tmp:
    shutil.rmtree(tmp, ignore_errors=True)


def _exit_now(signum: int) -> None:
  """Ends the process from the watcher: the one line, then `os._exit`."""
  message, code = _signal_line(signum)
  _report(message)
  _remove_tmpdir()
  os._exit(code)  # pylint: disable=protected-access


def _raise_in_this_thread(signum: int) -> None:
  """Delivers `signum` to the C handler installed for it (JAX's notifier).

  The signal is blocked in every thread; unblocked in this one only for
  the call, it reaches the process's handler before `pthread_kill` returns.
  """
  signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
  try:
    signal.pthread_kill(threading.get_ident(), signum)
  finally:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signum})


def _watch(signals: set[int]) -> None:
  # `exit_process` wakes the watcher with `_WAKE` (sent to this thread
  # only): signals taken before it are recorded before it is answered.
  signal.pthread_sigmask(signal.SIG_BLOCK, {_WAKE})
  while True:
    signum = signal.sigwait(signals | {_WAKE})
    if signum == _WAKE:
      _state["woken"].set()
      continue
    with _report_lock:
      finished, first = _state["finished"], _state["signum"]
      if first is None:
        _state["signum"] = signum
    if finished:
      _exit_now(signum)  # The process is ending: with this signal's status.
    if first is not None:
      _exit_now(first)  # A second signal: stop now.
    grace = GRACE_SECONDS
    if waits_for_sync_point(signum):
      _raise_in_this_thread(signum)
      grace = PREEMPTION_GRACE_SECONDS
    timer = threading.Timer(grace, _exit_now, args=(signum,))
    timer.daemon = True
    _state["timer"] = timer
    timer.start()


def waits_for_sync_point(signum: int) -> bool:
  """True if `signum` stops the job at JAX's preemption sync point.

  That is SIGTERM on a multi-process job whose preemption service runs (the
  signal is handed to JAX's notifier, which tells every host); the epoch
  loop then saves and stops where `reached_preemption` says, on every host
  at the same step. Otherwise a signal stops the loop at its next step.
  """
  return signum == signal.SIGTERM and _state["forward_sigterm"]


def _preemption_service() -> bool:
  """Whether `jax.distributed` runs a preemption sync manager (multi-host)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax._src import distributed  # pylint: disable=g-import-not-at-top
  return (jax.process_count() > 1 and getattr(
      distributed.global_state, "preemption_sync_manager", None) is not None)


def exit_process(code: int = 0):
  """Ends a script's process: `code`, or 130/143 if a signal came first.

  The exit handlers (JAX's distributed shutdown, log flushes) run first;
  then, under the watcher's lock, a signal taken or pending decides the
  status, so that one arriving at any moment before the exit (after the
  summary is written too) is not dropped. Without the watcher (a test
  calling the job in-process) this is `sys.exit(code)`.
  """
  if _state["watcher"] is None:
    sys.exit(code)
  atexit._run_exitfuncs()  # pylint: disable=protected-access
  with _report_lock:
    _state["finished"] = True  # From now on the watcher exits at a signal.
  # A signal the watcher took (sigwait returned) may wait for the GIL to
  # be recorded: the watcher answers `_WAKE` only after it.
  _state["woken"] = threading.Event()
  signal.pthread_kill(_state["watcher"].ident, _WAKE)
  _state["woken"].wait(timeout=10)
  with _report_lock:
    signum = _state["signum"]
    if signum is None:
      pending = set(signal.sigpending()) & set(_SIGNALS)
      signum = min(pending) if pending else None
  if signum is not None:
    message, code = _signal_line(signum)
    _report(message)
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  os._exit(code)  # pylint: disable=protected-access


def start_signal_watcher() -> None:
  """Takes SIGINT and SIGTERM in a thread, if the script blocked them.

  Each script blocks both signals in its first lines (before JAX and
  TensorFlow start threads); a process that did not (a test calling `run`
  in-process) keeps Python's usual handling.
  """
  signals = set(_SIGNALS)
  if _state["watcher"] is not None or not signals <= set(
      signal.pthread_sigmask(signal.SIG_BLOCK, [])):
    return
  _state["watcher"] = threading.Thread(target=_watch, args=(signals,),
                                       name="signal-watcher", daemon=True)
  _state["watcher"].start()


def pending_signal() -> Optional[int]:
  """The SIGINT or SIGTERM that arrived, or None (cheap: no sync)."""
  return _state["signum"]


def hold_exit() -> None:
  """Stops the watcher's grace timer: the step loop saves before it stops.

  A second signal still ends the process at once.
  """
  timer = _state.get("timer")
  if timer is not None:
    timer.cancel()


def check_interrupt() -> None:
  """Raises `Interrupted` if SIGINT or SIGTERM arrived (cheap: no sync)."""
  if _state["signum"] is not None:
    raise Interrupted(_state["signum"])


def parse_flags(argv: list[str]) -> list[str]:
  """`app.run`'s flags parser: a parse error is one line and exit status 2.

  The config file is loaded while parsing, so an unknown file, preset word
  or field override is reported here too.
  """
  start_signal_watcher()
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    _fail(_flag_error(argv, e))
  except (KeyError, AttributeError) as e:
    # A --config.a.b=v override of a field the config does not have.
    _fail(_override_error(argv, e))
  except (ValueError, TypeError, OSError, SyntaxError) as e:
    # A config file's get_config(arg) refusing its argument.
    _fail(f"--config: {_config_error(e)}")
  if len(rest) > 1:
    _fail(f"unexpected argument {rest[1]!r}: every setting is a flag, e.g. "
          "--config.train.epochs=3 (see --help).")
  return rest


def _override_error(argv: list[str], e: BaseException) -> str:
  """Names the unknown field of a `--config.<field>=v` override."""
  if not any(a.startswith("--config=") or a == "--config"
             for a in argv[1:]):
    override = next((a.split("=", 1)[0] for a in argv[1:]
                     if a.startswith("--config.")), "--config.<field>")
    return (f"{override} overrides a field of a config file, but no "
            "--config=<file> was given (e.g. --config=configs/default.py).")
  try:
    from mrmc_jax.runner import fields  # pylint: disable=g-import-not-at-top
    config = flags.FLAGS["config"].value
    if config is None:
      # Not set yet when the override fails: load the file again.
      import runpy  # pylint: disable=g-import-not-at-top
      path = next(a for a in argv[1:] if a.startswith("--config="))
      path, *arg = path[len("--config="):].split(":", 1)
      config = runpy.run_path(path)["get_config"](*arg)
    for arg in argv[1:]:
      if arg.startswith("--config."):
        fields.check_field(config,
                           arg[len("--config."):].split("=", 1)[0])
  except ValueError as found:
    return f"--config: {found}"
  except Exception:  # pylint: disable=broad-except
    pass
  return f"--config: {type(e).__name__}: {e}"


def _config_error(e: BaseException) -> str:
  """The innermost cause: ml_collections re-raises a config file's error
  with the whole traceback in its message."""
  chain, seen = [e], {id(e)}
  while True:
    nxt = chain[-1].__cause__ or chain[-1].__context__
    if nxt is None or id(nxt) in seen:
      break
    seen.add(id(nxt))
    chain.append(nxt)
  for err in reversed(chain):
    if isinstance(err, SyntaxError):
      return (f"{err.filename}, line {err.lineno}: invalid Python syntax "
              f"({err.msg}).")
    if isinstance(err, (ValueError, TypeError, OSError, KeyError,
                        AttributeError)):
      text = str(err)
      if "Traceback (most recent call last)" not in text:
        return text
  # No clean message in the chain: the last line of the embedded traceback.
  return str(e).strip().splitlines()[-1]


def _flag_error(argv: list[str], e: flags.Error) -> str:
  """One readable line for a flags error (config files load while parsing)."""
  cause = e.__cause__ or e.__context__
  if cause is not None:
    return f"--config: {_config_error(cause)}"
  if isinstance(e, flags.UnrecognizedFlagError) and str(
      getattr(e, "flagname", "")).startswith("config."):
    return _override_error(argv, e)
  return str(e).split("\n")[0]


# Libraries whose log records of a failure (often whole tracebacks) stay
# off the console: the failure itself reaches the run as an exception.
_QUIET_LOGGERS = ("asyncio", "gcsfs", "fsspec", "aiohttp", "urllib3",
                  "google", "google_auth_httplib2")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _quiet_in_library_threads(hook):
  """`sys.excepthook` that keeps tracebacks of library threads off stderr.

  An exception that ends a library's thread after a failure (a full disk,
  lost storage) would print its traceback before the one `error:` line.
  Those go to the log at INFO; the main thread's exceptions (a bug) keep
  their traceback. (Errors a library reports as unraisable, such as
  tensorstore's "Event loop is closed": `_quiet_unraisable_in_library_threads`.)
  """
  def quiet(kind, value, tb):
    if threading.current_thread() is threading.main_thread():
      hook(kind, value, tb)
    else:
      logging.info("in a library thread: %s: %s", kind.__name__, value)
  return quiet


def _quiet_unraisable_in_library_threads(hook):
  """`sys.unraisablehook` that keeps library threads' ignored errors quiet.

  Tensorstore completes orbax's futures on its own threads and reports an
  error of the callback as unraisable: after a failed save (a full disk,
  lost storage) each is a "RuntimeError: Event loop is closed" traceback
  from orbax's closed asyncio loop, printed before the one `error:` line.
  Those go to the log at INFO; the main thread's keep the default output.
  """
  def quiet(unraisable):
    if threading.current_thread() is threading.main_thread():
      hook(unraisable)
    else:
      try:  # Also while the interpreter shuts down.
        logging.info("ignored in a library thread: %s: %s",
                     unraisable.exc_type.__name__, unraisable.exc_value)
      except Exception:  # pylint: disable=broad-except
        pass
  quiet.quiet_in_library_threads = True
  return quiet


def _error_line(e: BaseException, workdir: str) -> str:
  """The one line of a ValueError or OSError, naming what failed."""
  msg = str(e)
  if isinstance(e, OSError) and e.filename and e.filename not in msg:
    msg = f"{e.filename}: {msg}"
  resume = "rerun the same command to resume from the last checkpoint"
  if (isinstance(e, OSError) and e.errno in _NO_SPACE) or (
      "No space left on device" in msg or "[os_error_code='28']" in msg):
    return (f"no space left on the device of --workdir={workdir} ({msg}); "
            f"free space, then {resume}.")
  remote = "://" in str(workdir)
  # gcsfs (aiohttp) and tensorstore (curl, orbax's arrays) say it so.
  if remote and (isinstance(e, (ConnectionError, TimeoutError)) or any(
      s in msg for s in ("Cannot connect to host", "retry attempts failed",
                         "Could not connect to server"))):
    return (f"the storage of --workdir={workdir} stopped answering ({msg}); "
            f"when it is reachable, {resume}.")
  return msg


class _QuietOrbax(std_logging.Filter):
  """Keeps orbax's own warnings and errors (often whole tracebacks from its
  background threads) off the console: its failure reaches the run as an
  exception, which becomes the one `error:` line."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    path = record.pathname.replace(os.sep, "/")
    return "/orbax/" not in path and "/tensorstore/" not in path


def run(job: Callable[[Any, str], Any], config: Any, workdir: str) -> Any:
  """Runs `job(config, workdir)` with the shared setup and exit statuses."""
  # Orbax logs every checkpoint file at INFO; keep the console to progress
  # bars, warnings and the result table unless --verbosity asks for more.
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
    if not any(isinstance(f, _QuietOrbax)
               for f in logging.get_absl_logger().filters):
      logging.get_absl_logger().addFilter(_QuietOrbax())
    # Unretrieved exceptions of orbax's asyncio tasks (a torn checkpoint
    # that is then skipped) would print their coroutine tracebacks, and the
    # storage clients log each failed request with its traceback: their
    # failure reaches the run as an exception, which becomes the one line.
    for name in _QUIET_LOGGERS:
      std_logging.getLogger(name).setLevel(std_logging.CRITICAL)
  # TensorFlow's autograph writes generated modules to the temporary
  # folder and never removes them: give the run its own, removed at exit.
  _state["reported"] = False
  old_tmp = os.environ.get("TMPDIR")
  _remove_stale_tmpdirs()
  _state["tmpdir"] = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-")
  tempfile.tempdir = _state["tmpdir"]
  os.environ["TMPDIR"] = _state["tmpdir"]
  old_hook = sys.excepthook
  sys.excepthook = _quiet_in_library_threads(old_hook)
  # Kept to the end of the process: after a failed save, tensorstore's
  # threads still report orbax's closed loop while the process exits.
  if not getattr(sys.unraisablehook, "quiet_in_library_threads", False):
    sys.unraisablehook = _quiet_unraisable_in_library_threads(
        sys.unraisablehook)
  try:
    check_interrupt()
    # A URL workdir of an unsupported scheme, or on storage that does not
    # answer, is refused before any work (and never becomes a local folder
    # named after the URL).
    from mrmc_jax.runner import storage  # pylint: disable=g-import-not-at-top
    storage.check_url(workdir)
    import jax  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.set_visible_devices([], "GPU")
    dist = config.get("distributed")
    if dist is not None and dist.initialize:
      # None values let JAX detect the cluster (TPU pods, SLURM, Open MPI).
      jax.distributed.initialize(
          coordinator_address=dist.coordinator_address,
          num_processes=dist.num_processes, process_id=dist.process_id)
    _state["forward_sigterm"] = _preemption_service()
    logging.info("JAX process %d/%d, %d devices.", jax.process_index(),
                 jax.process_count(), jax.device_count())
    result = job(config, workdir)
    # A signal that came after the last step is not dropped: the run ends
    # as interrupted (its outputs are complete; a rerun reads them back).
    check_interrupt()
    return result
  except (ValueError, OSError) as e:
    # Bad input (FileNotFoundError and PermissionError are OSErrors):
    # one line, non-zero exit, nothing in a pre-existing workdir touched.
    # A full disk or storage that stopped answering mid-run: one line that
    # says so; every write is atomic, so the rerun resumes.
    _fail(_error_line(e, workdir))
  except Interrupted as e:
    _fail(*_signal_line(e.signum))
  except KeyboardInterrupt:
    _fail(*_signal_line(signal.SIGINT))
  finally:
    sys.excepthook = old_hook
    tempfile.tempdir = None
    if old_tmp is None:
      os.environ.pop("TMPDIR", None)
    else:
      os.environ["TMPDIR"] = old_tmp
    _remove_tmpdir()
    _state["tmpdir"] = None
