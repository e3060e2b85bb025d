"""Bad data through the runner's entry point: one `error:` line, exit 2,
before any training, and no workdir claimed (so the corrected command runs)."""

import numpy as np
import pytest

from mrmc_jax.configs import base
from mrmc_jax.configs import default
from mrmc_jax.runner import cli
from mrmc_jax.runner import experiment


def _npz(tmp_path, name, **arrays):
  path = tmp_path / f"{name}.npz"
  np.savez(path, **arrays)
  return f"npz:{path}"


def _cases(tmp_path):
  x = np.zeros((40, 8, 8), np.uint8)
  y = np.arange(40) % 10
  return {
      "scalar_arrays": (
          _npz(tmp_path, "scalar", x_train=np.uint8(1), y_train=np.int64(1)),
          "x_train has dtype uint8 and shape (); images must be"),
      "zero_size_images": (
          _npz(tmp_path, "zero", x_train=np.zeros((40, 0, 8), np.uint8),
               y_train=y),
          "x_train has dtype uint8 and shape (40, 0, 8); every image needs"),
      "absurd_label": (
          _npz(tmp_path, "absurd", x_train=x, y_train=np.r_[y[:39], 100000]),
          "labels imply 100001 classes"),
      "test_class_absent_from_train": (
          _npz(tmp_path, "absent", x_train=x, y_train=y % 5, x_test=x[:4],
               y_test=np.array([0, 7, 7, 1])),
          "2 of 4 test examples have classes absent from the train split"),
  }


@pytest.mark.parametrize("case", ["scalar_arrays", "zero_size_images",
                                  "absurd_label",
                                  "test_class_absent_from_train",
                                  "image_size_zero"])
def test_bad_data_is_one_line_and_claims_nothing(capsys, tmp_path, case):
  name, match = _cases(tmp_path).get(
      case, ("digits", "dataset.image_size=0 is not allowed"))
  fields = {"dataset.name": name}
  if case == "image_size_zero":
    fields["dataset.image_size"] = 0
  config = base.set_fields(default.get_config(), fields)
  workdir = tmp_path / "w"
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    cli.run(experiment.train_and_evaluate, config, str(workdir))
  err = capsys.readouterr().err
  assert e.value.code == cli.USAGE_ERROR, err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), err
  assert match in lines[0], lines[0]
  assert not workdir.exists()
