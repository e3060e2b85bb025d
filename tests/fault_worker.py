r"""Runs `experiments/main.py` and signals itself at one chosen point, for tests.

  python tests/fault_worker.py POINT -- --config=... --workdir=W

POINT is `<signal>:<where>`, the signal one of `kill` (SIGKILL), `int`
(SIGINT) or `term` (SIGTERM), and `where` one of:
  * `inside_checkpoint:<stage>:<epoch>`: after orbax has started writing the
    checkpoint of that epoch of `warmup` or `train`, before it is finished;
  * `after_checkpoint:<stage>:<epoch>`: once that checkpoint is on disk;
  * `inside_write:<name>`: inside the atomic write of the workdir file
    `<name>` (e.g. `mask.npy`), once its temporary file holds the data and
    before it is renamed into place.
  * `at:<seconds>`: that many seconds after the start (during imports,
    data loading or compilation), from a timer thread.
  * `at_exit`: from the first exit handler, once the job has returned
    (after its last write) and the process is shutting down.
main.py itself runs unchanged; only the signal is injected. The signal is
sent to the process (`os.kill`), as a terminal or a scheduler sends it.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# main.py's `import preamble` (run below by path) finds experiments/ here.
sys.path.insert(0, os.path.join(ROOT, "experiments"))
# As main.py does first: the signals wait for the runner's watcher thread.
import preamble  # pylint: disable=g-import-not-at-top,unused-import

import runpy  # pylint: disable=g-import-not-at-top,g-bad-import-order
import signal  # pylint: disable=g-import-not-at-top
import threading  # pylint: disable=g-import-not-at-top

SIGNALS = {"kill": signal.SIGKILL, "int": signal.SIGINT,
           "term": signal.SIGTERM}


def main():
  point, sep, *rest = sys.argv[1:]
  assert sep == "--", sys.argv
  sig, where, *args = point.split(":")
  signum = SIGNALS[sig]

  def fire():
    sys.stdout.flush()
    os.kill(os.getpid(), signum)

  if where == "at":
    # Started before anything is imported: the signal may land in imports.
    timer = threading.Timer(float(args[0]), fire)
    timer.daemon = True
    timer.start()

  from mrmc_jax.runner import loop  # pylint: disable=g-import-not-at-top
  from mrmc_jax.runner import workdir as wd  # pylint: disable=g-import-not-at-top

  if where == "at":
    pass
  elif where == "at_exit":
    import atexit  # pylint: disable=g-import-not-at-top
    atexit.register(fire)
  elif where in ("inside_checkpoint", "after_checkpoint"):
    stage, epoch = args[0], int(args[1])
    save = loop.save_checkpoint

    def save_checkpoint(mngr, e, tree):  # pylint: disable=function-redefined
      here = os.path.basename(str(mngr.directory)) == stage and e == epoch
      if here and where == "inside_checkpoint":
        import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
        mngr.save(e, args=ocp.args.StandardSave(tree))  # Asynchronous.
        fire()
        loop.finish_checkpoint(mngr, e)
        return
      save(mngr, e, tree)
      if here:
        fire()

    loop.save_checkpoint = save_checkpoint
  elif where == "inside_write":
    name = args[0]
    atomic = wd._atomic  # pylint: disable=protected-access

    def _atomic(path, write):
      if os.path.basename(path) != name:
        return atomic(path, write)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      with open(os.path.join(os.path.dirname(path),
                             ".tmp-" + name + "-killed"), "wb") as f:
        write(f)
      fire()
      return atomic(path, write)

    wd._atomic = _atomic  # pylint: disable=protected-access
  else:
    raise SystemExit(f"unknown point {point!r}")
  sys.argv = [os.path.join(ROOT, "experiments", "main.py"), *rest]
  runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
  main()
