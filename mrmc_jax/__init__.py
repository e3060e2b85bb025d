"""mrmc_jax: core-set selection by Maximum Reduction as Maximum Contribution.

The names in `__all__` are the public API: the contract other codebases rely
on, listed with their signatures in the README (a test keeps the two equal)
and changed only as `CHANGELOG.md` says (a moved name keeps a warned alias
for one minor version). `dir(mrmc_jax)` lists exactly these. Submodules are
not part of the top-level API: Python binds `mrmc_jax.losses` and the like
as attributes once they are imported, so `mrmc_jax.losses.x` still works,
but `dir()`, `from mrmc_jax import *` and tab completion show only the
functions. Modules that need TensorFlow (`data`, `ids`) or the
runner are imported explicitly (`from mrmc_jax import ids`), and the NNX
functions load `flax.nnx` on first use, so `import mrmc_jax` stays light.
"""

import importlib

from mrmc_jax.checking import checked
from mrmc_jax.losses import make_per_example_loss_fn
from mrmc_jax.losses import per_example_grad_norms
from mrmc_jax.losses import per_example_loss
from mrmc_jax.losses import per_example_stats
from mrmc_jax.methods.mrmc_r import mrmc_r_select
from mrmc_jax.scoring import fit_exponential_decay
from mrmc_jax.scoring import fitted_curve
from mrmc_jax.scoring import mrmc_scores
from mrmc_jax.selection import budget
from mrmc_jax.selection import class_quotas
from mrmc_jax.selection import select_mask
from mrmc_jax.selection import select_mask_host
from mrmc_jax.sharding import all_gather
from mrmc_jax.sharding import make_mesh
from mrmc_jax.sharding import replicate
from mrmc_jax.sharding import shard_batch
from mrmc_jax.train_step import BatchStatsTrainState
from mrmc_jax.train_step import create_train_state
from mrmc_jax.train_step import make_eval_step
from mrmc_jax.train_step import make_train_step
from mrmc_jax.train_step import module_apply_fn
from mrmc_jax.trajectory import check_visits
from mrmc_jax.trajectory import init_trajectory
from mrmc_jax.trajectory import make_recording_step
from mrmc_jax.trajectory import record
from mrmc_jax.trajectory import visit_report
from mrmc_jax.trajectory import VisitError

__version__ = "0.3.0"

__all__ = [
    # Per-example statistics and train steps (Linen, any train state).
    "per_example_stats",
    "per_example_loss",
    "per_example_grad_norms",
    "make_per_example_loss_fn",
    "make_train_step",
    "make_eval_step",
    "module_apply_fn",
    "create_train_state",
    "BatchStatsTrainState",
    # Flax NNX.
    "nnx_train_step",
    "make_nnx_train_step",
    "make_nnx_eval_step",
    # Trajectories by global id.
    "init_trajectory",
    "record",
    "make_recording_step",
    "check_visits",
    "visit_report",
    "VisitError",
    # Scores and selection.
    "mrmc_scores",
    "fit_exponential_decay",
    "fitted_curve",
    "mrmc_r_select",
    "select_mask",
    "select_mask_host",
    "class_quotas",
    "budget",
    # Checks inside jit.
    "checked",
    # Meshes.
    "make_mesh",
    "shard_batch",
    "replicate",
    "all_gather",
]

# Public names loaded on first access: {name: module}.
_LAZY = {
    "nnx_train_step": "mrmc_jax.nnx_adapter",
    "make_nnx_train_step": "mrmc_jax.nnx_adapter",
    "make_nnx_eval_step": "mrmc_jax.nnx_adapter",
}


def __getattr__(name: str):
  if name in _LAZY:
    obj = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = obj
    return obj
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
  return sorted(__all__ + ["__version__"])
