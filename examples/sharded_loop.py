r"""The loop of `flax_loop.py` data-parallel over 8 (simulated) devices.

`jax.jit` over a one-axis `Mesh`: each batch is split over the devices, the
state and the `[N, R]` trajectory are replicated, and the statistics are
gathered inside the fused train-and-record step (`make_recording_step` with
`mesh=`), so the trajectory is never all-reduced. The mask does not depend on
the device count:

  python examples/sharded_loop.py            # 8 simulated CPU devices
  python examples/sharded_loop.py --devices=1
"""

import os
import sys

# Simulated devices must be requested before JAX starts.
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS",
                                                                 ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import flax_loop  # pylint: disable=g-import-not-at-top
import jax
import numpy as np
import optax
import tensorflow as tf

import mrmc_jax as mj


def main(num_devices: int = 8) -> dict:
  (x_train, y_train), (x_test, y_test) = flax_loop.load_digits()
  n = len(y_train)
  model = flax_loop.Net()
  train = flax_loop.as_split(x_train, y_train)
  rng = jax.random.key(1)
  mesh = mj.make_mesh(jax.devices()[:num_devices])

  apply_fn = mj.module_apply_fn(model)
  state = mj.replicate(flax_loop.new_state(
      model, optax.sgd(0.05, momentum=0.9), seed=0), mesh)
  step = mj.make_train_step(apply_fn, loss_fn=flax_loop.smoothed_cross_entropy)
  warm_step = jax.jit(mj.make_recording_step(step, mesh=mesh),
                      donate_argnums=(0, 1))
  traj = mj.replicate(mj.init_trajectory(n, flax_loop.WARMUP_EPOCHS), mesh)
  for epoch in range(flax_loop.WARMUP_EPOCHS):
    for batch in flax_loop.batches(train, epoch):
      state, traj, _ = warm_step(state, traj, mj.shard_batch(batch, mesh),
                                 epoch, rng)
  mj.check_visits(np.asarray(traj["visits"]))
  scores = mj.mrmc_scores(traj["loss"])
  mask = mj.select_mask(scores, y_train, flax_loop.RATIO,
                        num_classes=flax_loop.NUM_CLASSES)
  coreset = np.flatnonzero(np.asarray(mask))

  state = mj.replicate(flax_loop.new_state(
      model, optax.sgd(0.05, momentum=0.9), seed=2), mesh)
  plain = jax.jit(mj.make_train_step(
      apply_fn, loss_fn=flax_loop.smoothed_cross_entropy, with_stats=False),
                  donate_argnums=0)
  for epoch in range(flax_loop.TRAIN_EPOCHS):
    for batch in flax_loop.batches(train, epoch, coreset):
      state, _ = plain(state, mj.shard_batch(batch, mesh), rng)
  return {"mask": np.asarray(mask), "num_selected": int(np.sum(mask)),
          "num_examples": n, "num_devices": num_devices,
          "test_accuracy": flax_loop.accuracy(
              apply_fn, state, flax_loop.as_split(x_test, y_test))}


if __name__ == "__main__":
  tf.config.set_visible_devices([], "GPU")
  devices = 8
  for arg in sys.argv[1:]:
    if not arg.startswith("--devices="):
      sys.exit(f"error: unknown argument {arg!r}; allowed: --devices=N")
    devices = int(arg.split("=", 1)[1])
  out = main(devices)
  print(f"{out['num_devices']} devices: core-set {out['num_selected']} / "
        f"{out['num_examples']}, test accuracy "
        f"{100 * out['test_accuracy']:.2f}%")
