"""One call that loads any data set, in memory or streamed.

`load` is what the runner (and any program that takes a data set name)
calls: it checks the request (`catalog.check_source`), then reads the data
with `sources.load_dataset` (in memory) or `stream.open_dataset` (streamed,
each process scanning its share).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import numpy as np

from mrmc_jax.data import catalog
from mrmc_jax.data import images as images_lib
from mrmc_jax.data import sources
from mrmc_jax.data import splits


def load(name: str,
         data_dir: str | os.PathLike | None = None,
         *,
         input: str = "memory",  # pylint: disable=redefined-builtin
         image_size: int | tuple[int, int] | None = None,
         process_index: int = 0,
         process_count: int = 1,
         allgather: Callable[[np.ndarray], np.ndarray] | None = None,
         mean_std: tuple[np.ndarray, np.ndarray] | None = None,
         labels: Mapping[str, np.ndarray] | None = None
         ) -> splits.Dataset:
  """Loads a data set by name.

  Args:
    name: `catalog.DATASET_NAMES`.
    data_dir: the source's folder or file (see `sources.load_dataset`).
    input: "memory" (decode everything into `ArraySplit`s) or "stream"
      (tfds sets prepared as ArrayRecord, read by id: `StreamSplit`s).
    image_size: resize target: None, an int (square) or (H, W).
    process_index: this process (streaming splits the statistics pass).
    process_count: number of processes.
    allgather: maps this process's array [k] to every process's [P, k];
      needed to stream with process_count > 1.
    mean_std: the train split's (mean, std), float [C] each, if known
      already (e.g. cached by an earlier run on the same data): the
      statistics pass is skipped. Every process must pass it, or none.
    labels: streamed input only: the "train" and "test" labels, int [N]
      each, known already (`stream.open_dataset`): those splits are not
      scanned. Every process must pass the same, or none.

  Returns:
    The `splits.Dataset`.

  Raises:
    ValueError: a bad request (before any data is read) or bad data.
    DataNotFoundError: missing files; the message says how to get them.
  """
  catalog.check_source(name, input=input, image_size=image_size)
  size = images_lib.check_image_size(image_size)
  if input == "stream":
    from mrmc_jax.data import stream  # pylint: disable=g-import-not-at-top
    return stream.open_dataset(
        catalog.parse_name(name).arg, data_dir, image_size=size,
        process_index=process_index, process_count=process_count,
        allgather=allgather, mean_std=mean_std, labels=labels)
  if labels is not None:
    raise ValueError("labels are taken by input='stream' only, not "
                     f"input={input!r}")
  return sources.load_dataset(name, data_dir, image_size=size,
                              mean_std=mean_std)
