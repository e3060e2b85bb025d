"""Uncertainty baselines as DeepCore: least confidence, margin, entropy.

DeepCore (PatrickZH/DeepCore, `deepcore/methods/uncertainty.py`) trains a
model on all data, then scores every training example in eval mode:
  LeastConfidence: the largest model output, `max_k z_k` (the code takes
    the logits; the paper writes `1 - max_k p_k`);
  Margin: `p_(1) - p_(2)`, the two largest softmax probabilities;
  Entropy: `sum_k p_k log(p_k + 1e-6)` (the negative entropy);
and, with `balance=True` (its `main.py` default), keeps in every class the
`round(fraction * n_c)` lowest scores: the least confident, smallest
margin, highest entropy. Here the model is the warm-up's, scored at the end
of warm-up (`uncertainty_columns`, recorded by the runner as the
`uncertainty` artefact `[N, 4]`), and the rows keep the lowest scores
under the selector's quotas (largest remainder, so the core-set has
exactly `floor(ratio * N)` examples; ties in the seeded hash order).

Without class quotas (`class_balanced=False`) the rows keep the globally
most uncertain examples. DeepCore's `balance=False` branch sorts the scores
descending instead and so keeps the most certain ones, the opposite of its
balanced branch; that is not reproduced.
"""

import jax
import jax.numpy as jnp
import numpy as np

from mrmc_jax.methods import common

Array = jax.Array

# The columns of `uncertainty_columns` (and of the `uncertainty` artefact).
COLUMNS = ("max_logit", "max_prob", "top2_margin", "neg_entropy")
LEAST_CONFIDENCE_INPUTS = ("logits", "softmax")


def uncertainty_columns(logits: Array) -> Array:
  """DeepCore's uncertainty scores of one batch, from its logits.

  Args:
    logits: float `[B, C]`, eval-mode model outputs, C >= 2.

  Returns:
    float32 `[B, 4]`, the `COLUMNS`: the largest logit, the largest softmax
    probability, the margin between the two largest probabilities, and
    `sum_k p_k log(p_k + 1e-6)`. Low = uncertain in every column.
  """
  common.check_ndim(logits, 2, "logits", "[B, C]")
  if logits.shape[1] < 2:
    raise ValueError(f"logits has shape {logits.shape}; uncertainty scores "
                     "need C >= 2 classes.")
  z = jnp.asarray(logits, jnp.float32)
  p = jax.nn.softmax(z, axis=-1)
  top2 = jax.lax.top_k(p, 2)[0]
  return jnp.stack([jnp.max(z, axis=-1), top2[:, 0], top2[:, 0] - top2[:, 1],
                    jnp.sum(p * jnp.log(p + 1e-6), axis=-1)], axis=-1)


def uncertainty_keep_scores(columns: Array, kind: str,
                            least_confidence_on: str = "logits"
                            ) -> np.ndarray:
  """Scores to keep highest: minus DeepCore's score of `kind`.

  Args:
    columns: float `[N, 4]`, the `uncertainty` artefact.
    kind: "least_confidence", "margin" or "entropy".
    least_confidence_on: "logits" (DeepCore's code: `-max_k z_k`) or
      "softmax" (its paper: `1 - max_k p_k`).

  Returns:
    float32 `[N]`, higher = more uncertain.

  Raises:
    ValueError: on a bad shape, NaN/inf, or an unknown kind.
  """
  common.check_ndim(columns, 2, "uncertainty", "[N, 4]")
  if np.shape(columns)[1] != len(COLUMNS):
    raise ValueError(f"uncertainty has shape {np.shape(columns)}; expected "
                     f"[N, {len(COLUMNS)}] (columns {', '.join(COLUMNS)}).")
  common.check_finite(columns, "uncertainty")
  cols = np.asarray(columns, np.float32)
  if kind == "least_confidence":
    if least_confidence_on not in LEAST_CONFIDENCE_INPUTS:
      raise ValueError(f"least_confidence_on={least_confidence_on!r} is not "
                       f"allowed: use one of "
                       f"{', '.join(LEAST_CONFIDENCE_INPUTS)}.")
    if least_confidence_on == "logits":
      return -cols[:, 0]
    return 1.0 - cols[:, 1]
  if kind == "margin":
    return -cols[:, 2]
  if kind == "entropy":
    return -cols[:, 3]
  raise ValueError(f"kind={kind!r} is not allowed: use least_confidence, "
                   "margin or entropy.")


def _row(kind: str, summary: str) -> common.Method:
  def select(art, labels, ratio, *, num_classes, opts, cache):
    del cache  # Unused.
    scores = uncertainty_keep_scores(
        art["uncertainty"], kind,
        least_confidence_on=opts.least_confidence_on)
    return common.select_top(scores, labels, ratio, num_classes=num_classes,
                             class_balanced=opts.class_balanced,
                             seed=opts.seed)

  extra = OPTIONS if kind == "least_confidence" else ()
  return common.Method(kind, frozenset({"uncertainty"}),
                       common.COMMON + extra, select, summary)


OPTIONS = common.declare(
    common.Option("on", str, "logits", "least confidence: "
                  "the largest logit (DeepCore's code) or the largest "
                  "softmax probability (its paper)",
                  choices=LEAST_CONFIDENCE_INPUTS, absent="logits",
                  legacy="least_confidence_on"),
    scope="least_confidence")

LEAST_CONFIDENCE = _row(
    "least_confidence", "lowest largest output at the end of warm-up "
    "(DeepCore)")
MARGIN = _row("margin", "smallest top-2 softmax margin at the end of "
              "warm-up (DeepCore)")
ENTROPY = _row("entropy", "highest softmax entropy at the end of warm-up "
               "(DeepCore)")
