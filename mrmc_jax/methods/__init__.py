"""Core-set selection methods as plug-ins, behind one registry.

Layout:
  `options`: the `Option` declaration, `SelectionOptions` (the values of
    every declared option), spec parsing and the option checks.
  `registry`: the table of `Method` rows, `register`, `select`, `needs`.
  `common`: the row type, the trajectory view, shared input checks.
  One module per family, each with its pure functions, its option
  declarations and its row(s): `mrmc`, `mrmc_r`, `mrmc_ra` (ratio-aware
  sampling of MRMC's score), `scores` (random, el2n, grand, forgetting,
  dyn_unc), `moderate`, `ccs`, `d2`, `dual`, `tdds`, `aum`,
  `uncertainty` (least_confidence, margin, entropy), `geometry` (kcenter,
  herding), `boundary`; `difficulty` gives CCS and D2 their input.

Adding a method with one knob touches one module (its pure functions,
`OPTIONS = common.declare(common.Option("knob", ...), scope="name")` for the
knob, and a `common.Method` row naming the artefacts it needs and reading
`common.COMMON + OPTIONS`), its test, and one line in
`registry._BUILTIN`; a method outside the package calls `register(...)`
instead (no registry line) and is loaded by the runner from
`selection.plugins`. The config field `selection.name.knob` (settable as
`--config.selection.name.knob=...`), the spec argument `name(knob=...)`,
its checks, its cache identity and its README row all come from the
declaration. What the runner draws or how a comparison plots a method
comes from its row too (`Method.curves`, `role`, `label`): the runner
names no method.
"""

from mrmc_jax.methods.common import LOSS_SOURCES
from mrmc_jax.methods.common import Method
from mrmc_jax.methods.common import trajectory_view
from mrmc_jax.methods.difficulty import DIFFICULTY_SCORES
from mrmc_jax.methods.mrmc import mrmc_from_artefacts
from mrmc_jax.methods.mrmc_r import mrmc_r_select
from mrmc_jax.methods.options import check_options
from mrmc_jax.methods.options import declare
from mrmc_jax.methods.options import declared
from mrmc_jax.methods.options import Option
from mrmc_jax.methods.options import parse_spec
from mrmc_jax.methods.options import SelectionOptions
from mrmc_jax.methods.registry import check_method
from mrmc_jax.methods.registry import check_output
from mrmc_jax.methods.registry import DEFAULT_COMPARED
from mrmc_jax.methods.registry import DEFAULT_METHOD
from mrmc_jax.methods.registry import get_method
from mrmc_jax.methods.registry import load_plugins
from mrmc_jax.methods.registry import method_names
from mrmc_jax.methods.registry import needs
from mrmc_jax.methods.registry import option_readers
from mrmc_jax.methods.registry import register
from mrmc_jax.methods.registry import resolve
from mrmc_jax.methods.registry import row
from mrmc_jax.methods.registry import select
