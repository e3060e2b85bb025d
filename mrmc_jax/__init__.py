"""mrmc_jax: core-set selection by Maximum Reduction as Maximum Contribution.

The public API below is the contract other codebases rely on. Modules that
need TensorFlow (`datasets`, `input_pipeline`) or the runner (`experiment`)
are imported explicitly, so `import mrmc_jax` stays light.
"""

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
from mrmc_jax.train_step import create_train_state
from mrmc_jax.train_step import make_eval_step
from mrmc_jax.train_step import make_train_step
from mrmc_jax.train_step import module_apply_fn
from mrmc_jax.train_step import TrainState
from mrmc_jax.trajectory import check_visits
from mrmc_jax.trajectory import init_trajectory
from mrmc_jax.trajectory import make_recording_step
from mrmc_jax.trajectory import record
from mrmc_jax.trajectory import visit_report
from mrmc_jax.trajectory import VisitError

__version__ = "0.1.0"
