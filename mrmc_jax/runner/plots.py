"""PNG plots of a selection: score histogram, picks per class, trajectories."""

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from mrmc_jax.runner import storage


def save(fig, path):
  """Writes the figure as PNG, atomically (local path or object store)."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
  plt.close(fig)
  storage.write_atomic(path, lambda f: f.write(buf.getvalue()))


def score_histogram(scores: np.ndarray, mask: np.ndarray, path: str,
                    title: str = "") -> None:
  """Histogram of all scores and of the selected ones (log count axis)."""
  scores = np.asarray(scores, np.float64)
  fig, ax = plt.subplots(figsize=(6, 3.5))
  finite = np.isfinite(scores)
  bins = np.histogram_bin_edges(scores[finite], bins=60)
  ax.hist(scores[finite], bins=bins, alpha=0.5, label="all")
  ax.hist(scores[finite & mask], bins=bins, alpha=0.7, label="selected")
  ax.set_yscale("log")
  ax.set_xlabel("score")
  ax.set_ylabel("examples")
  ax.set_title(title or "score histogram")
  ax.legend()
  save(fig, path)


def selected_per_class(labels: np.ndarray, mask: np.ndarray, num_classes: int,
                       path: str, title: str = "") -> None:
  """Bar chart of class sizes and the selected count per class."""
  sizes = np.bincount(labels, minlength=num_classes)
  picked = np.bincount(labels[mask], minlength=num_classes)
  fig, ax = plt.subplots(figsize=(max(4, num_classes * 0.35), 3.5))
  x = np.arange(num_classes)
  ax.bar(x, sizes, color="lightgray", label="class size")
  ax.bar(x, picked, color="tab:blue", label="selected")
  ax.set_xlabel("class")
  ax.set_ylabel("examples")
  ax.set_title(title or "selected per class")
  ax.legend()
  save(fig, path)


def trajectories(losses: np.ndarray, scores: np.ndarray, fitted: np.ndarray,
                 epochs: np.ndarray, path: str, count: int = 5) -> None:
  """Loss trajectories of the highest- and lowest-scored examples.

  Args:
    losses: float `[N, R]` observed per-epoch losses.
    scores: float `[N]`.
    fitted: float `[N, R]` fitted curve values at `epochs`.
    epochs: int `[R]` epoch numbers (x axis).
    path: output PNG.
    count: examples per panel.
  """
  order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
  for ax, ids, name in ((axes[0], order[:count], "highest"),
                        (axes[1], order[::-1][:count], "lowest")):
    for i, c in zip(ids, plt.rcParams["axes.prop_cycle"].by_key()["color"]):
      ax.plot(epochs, losses[i], "o", color=c, ms=3)
      ax.plot(epochs, fitted[i], "-", color=c,
              label=f"id {int(i)}: {scores[i]:.3g}")
    ax.set_title(f"{name}-scored examples (points: loss, lines: fit)")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=7)
  axes[0].set_ylabel("loss")
  save(fig, path)
