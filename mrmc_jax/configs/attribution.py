"""Loss-reduction attribution on Fashion-MNIST: stability and symmetry.

Run: python experiments/attribution.py --config=configs/attribution.py \
    --workdir=DIR
Fields on top of configs/fashion_mnist.py:
  attribution.num_probes: m probes, stratified by class, chosen among the
    examples present in every core-set.
  attribution.ratios: the core-set ratios compared with full data,
    comma-separated.
  attribution.method: the method spec that selects the core-sets (any
    selection method, with overrides, see mrmc_jax/methods/options.py); one
    warm-up serves every ratio.
  attribution.epochs: epochs each setting trains (its own training set).
  attribution.seed: seeds the choice of probes.
  attribution.reference_runs: extra full-data runs from the same
    initialisation with other data orders (seed + k); their error against
    the full-data matrix is the noise floor of the stability error.
Everything else (model, optimiser, schedule, batch size) comes from the
Fashion-MNIST config, except the warm-up: R = 10 epochs, as in the measured
results in docs/results/attribution/; the optimiser must be SGD (see
mrmc_jax/attribution.py for what the attribution approximates with
momentum).
"""

from mrmc_jax.configs import base
from mrmc_jax.configs import fashion_mnist
from mrmc_jax.runner import fields


def get_config(arg: str | None = None):
  # Presets go to the Fashion-MNIST config; field overrides are applied
  # here, after the attribution fields exist.
  config = fashion_mnist.get_config(",".join(sorted(base.presets(arg))))
  config.selection.warmup_epochs = 10
  # The attribution.* fields, declared (defaults, docs, what they affect)
  # in mrmc_jax/runner/fields.py.
  fields.add_attribution(config)
  return base.apply_overrides(config, arg, known=("tfds",))
