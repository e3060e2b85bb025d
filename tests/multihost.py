"""Launches `experiments/main.py` on local processes through the worker.

Shared by the multi-process tests: every process runs under `timeout` (a
missing peer would otherwise wait for the distributed init timeout) and on a
fresh coordinator port.
"""

import os
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multihost_worker.py")
# When each process of the last `launch` ended (time.time()).
LAST_ENDS: list[float] = []


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(workdir, record, tag, config_flags, *worker_flags, processes=2,
           local_devices=2):
  """Runs the job on `processes` local processes; returns (codes, outputs).

  The time each process ended (`time.time()`) is kept in `LAST_ENDS`.

  Args:
    workdir: the run's workdir.
    record: where the worker saves what each process fed and wrote.
    tag: the record's tag.
    config_flags: `--config.x=y` flags of the job (besides the distributed
      ones, added here).
    *worker_flags: flags of `multihost_worker.py` itself.
    processes: the process count.
    local_devices: simulated CPU devices per process.
  """
  port = free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count="
                       f"{local_devices}")
  procs = [subprocess.Popen(
      ["timeout", "-k", "10", "240", sys.executable, WORKER,
       f"--record={record}", f"--tag={tag}", *worker_flags, "--",
       "--config=" + os.path.join(ROOT, "configs", "default.py"),
       f"--workdir={workdir}", *config_flags,
       "--config.distributed.initialize=True",
       f"--config.distributed.coordinator_address=127.0.0.1:{port}",
       f"--config.distributed.num_processes={processes}",
       f"--config.distributed.process_id={i}"],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True) for i in range(processes)]
  outputs, ends = [""] * processes, [0.0] * processes

  def wait(i):
    outputs[i] = procs[i].communicate(timeout=270)[0]
    ends[i] = time.time()

  waiters = [threading.Thread(target=wait, args=(i,)) for i in range(processes)]
  try:
    for w in waiters:
      w.start()
    for w in waiters:
      w.join()
    LAST_ENDS[:] = ends
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return [p.returncode for p in procs], outputs
