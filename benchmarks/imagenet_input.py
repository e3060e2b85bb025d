r"""Images/s of the 224-px input on synthetic JPEG records, per host.

Writes `--num_images` synthetic photos (smooth gradients plus noise, sizes
drawn around ImageNet's mean of about 400 x 350, JPEG quality 90) as a tfds
ArrayRecord set into `--data_dir`, opens it for streaming at 224 px, then
iterates one epoch (global batch 256, one process) of:

* train, inception: `pipeline.train_dataset(augment=True)` at 224 px: a
  random-resized crop of each JPEG record (only the window is decoded) +
  flip, resize to 224 (what the 224-px configs now run);
* train, pad: the previous path: the whole image decoded, resized to
  224 x 224, then CIFAR's pad-4 crop + flip (`crop="pad"`);
* eval, center: `pipeline.eval_dataset` at 224 px: the center 87.5% window
  decoded and resized;
* eval, none: the whole image decoded and resized (`crop="none"`).

Each is timed after one warm-up pass and reported as [images/s, CPU-ms per
image] (`time.process_time` of every thread over the real rows): on a shared
machine the CPU time is the steadier figure.

Run: python benchmarks/imagenet_input.py --data_dir runs/jpeg_bench \
       [--num_images 2048]
"""

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _photos(n: int, seed: int = 0):
  import numpy as np  # pylint: disable=g-import-not-at-top

  def gen():
    rng = np.random.default_rng(seed)
    for i in range(n):
      h = int(rng.integers(280, 420))
      w = int(rng.integers(320, 500))
      y, x = np.mgrid[0:h, 0:w]
      base = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (h + w)],
                      -1)
      noise = rng.integers(0, 40, (h, w, 3))
      yield np.clip(base + noise, 0, 255).astype(np.uint8), i % 10

  return gen


def _rate(ds) -> tuple[int, float]:
  """(images/s, CPU-ms per image: every thread of this process)."""
  for _ in ds.as_numpy_iterator():  # warm-up: tf.data threads, caches
    pass
  t0, c0 = time.perf_counter(), time.process_time()
  images = 0
  for b in ds.as_numpy_iterator():
    images += int(b["mask"].sum())
  wall, cpu = time.perf_counter() - t0, time.process_time() - c0
  return round(images / wall), round(1000 * cpu / images, 2)


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--num_images", type=int, default=2048)
  args = parser.parse_args()

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], "GPU")
  from mrmc_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from mrmc_jax.data import stream  # pylint: disable=g-import-not-at-top

  name = f"synthetic_jpeg_{args.num_images}"
  if not os.path.isdir(os.path.join(args.data_dir, name)):
    stream.write_arrays(name, args.data_dir,
                        {"train": _photos(args.num_images)},
                        image_shape=(None, None, 3), num_classes=10,
                        encoding_format="jpeg")
  data = stream.open_dataset(name, args.data_dir, image_size=(224, 224))
  kw = dict(batch_size=256, mean=data.mean, std=data.std)
  out = {"images": len(data.train), "cpus": os.cpu_count()}
  for crop in ("inception", "pad"):
    out[f"train_{crop}"] = _rate(pipeline.train_dataset(
        data.train, seed=0, epoch=0, augment=True, crop=crop, **kw))
  for crop in ("center", "none"):
    out[f"eval_{crop}"] = _rate(pipeline.eval_dataset(
        data.train, crop=crop, **kw))
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
