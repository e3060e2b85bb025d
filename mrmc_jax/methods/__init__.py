"""Core-set selection methods as plug-ins, behind one registry.

Layout:
  `options`: `SelectionOptions` (every knob, with defaults), spec parsing.
  `registry`: the one table of `Method` rows, and `select`, `needs`.
  `common`: the row type, the trajectory view, shared input checks.
  One module per family, each with its pure functions and its row(s):
  `mrmc`, `mrmc_r`, `mrmc_ra` (ratio-aware sampling of MRMC's score),
  `scores` (random, el2n, grand, forgetting, dyn_unc), `moderate`, `ccs`,
  `d2`, `dual`; `difficulty` gives CCS and D2 their input.

Adding a method is one module plus one row in `registry.METHODS`: the
module holds the pure functions and a `common.Method` row (name, the
artefacts it needs, the `SelectionOptions` fields it reads, its `select`
function, a summary); a new knob is a `SelectionOptions` field with the
same default in `configs/base.py`.
"""

from mrmc_jax.methods.common import Method
from mrmc_jax.methods.common import trajectory_view
from mrmc_jax.methods.mrmc import mrmc_from_artefacts
from mrmc_jax.methods.mrmc_r import mrmc_r_select
from mrmc_jax.methods.options import DIFFICULTY_SCORES
from mrmc_jax.methods.options import LOSS_SOURCES
from mrmc_jax.methods.options import parse_spec
from mrmc_jax.methods.options import SelectionOptions
from mrmc_jax.methods.registry import check_method
from mrmc_jax.methods.registry import get_method
from mrmc_jax.methods.registry import method_names
from mrmc_jax.methods.registry import METHODS
from mrmc_jax.methods.registry import needs
from mrmc_jax.methods.registry import resolve
from mrmc_jax.methods.registry import select
