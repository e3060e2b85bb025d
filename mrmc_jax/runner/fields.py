"""Every config field: its default, what it affects, one line of doc.

Each field is declared once, here, with the stages whose results it changes
(`W` the warm-up, `S` the selection, `T` the core-set training; empty for
fields that change no result, such as the checkpoint interval, or that the
jobs pass to the stages explicitly, such as `seed`, `selection.method` and
`selection.ratio`). A field that changes no result is marked `runtime`:
it is left out of the run identity too, so a workdir resumes with any
value of it. The stage stamps (`stages.py`) are computed from these
marks, so a new field is a cache decision made where it is defined; a
field without a declaration is refused by the config check (and a test
runs every config file through it).

The `selection.*` fields of the method options are not listed: they come
from the options the method modules declare (`mrmc_jax.methods.options`),
each affecting the selection: `selection.<scope>.<name>` for an option one
method reads (`selection.d2.k`), `selection.<name>` for a shared one. The
flat spelling of a scoped option before 0.3.0 (`selection.d2_k`) is a
deprecated alias field (`legacy_fields`): None unless set, moved onto the
scoped field with a `DeprecationWarning` by `apply_legacy`, and never part
of an identity. Stamps name every option by its `Option.key` (the flat name
where there was one), and a stored identity in the flat form is read in the
scoped one (`upgrade_identity`), so workdirs written before 0.3.0 resume.

A field added after a release declares `absent`: the value at which it
computes what the release without it computed (the "off" value: 0 for a
new filter, "" for a new model override). At that value the field is left
out of the run identity (`config.json`, `grid.json`) and of every stage
stamp, so a workdir written before the field existed resumes after an
upgrade; any other value is part of both, and such a workdir is refused.
`absent` is declared when the field is added, never later (a workdir
written while the field was part of the stamps would no longer match),
and a field whose "off" value changes results must not declare it.
"""

import dataclasses
from typing import Any, Iterable, Iterator, Optional

import ml_collections

from mrmc_jax import methods
from mrmc_jax.methods import options as options_lib

W, S, T = "warmup", "selection", "train"
STAGES = (W, S, T)


@dataclasses.dataclass(frozen=True)
class Field:
  """One config field.

  Attributes:
    path: dotted name, e.g. "train.epochs".
    default: default value.
    affects: the stages whose results it changes (a subset of `STAGES`).
    doc: one line.
    type: the field type when the default is None (a FieldReference).
    absent: the value that computes what a version without the field
      computed (module docstring); `NOT_SET` for the fields every
      identity holds.
    runtime: how a job runs, not what it computes (checkpoint intervals):
      any value gives the same results, so the field is in no run identity
      and no stamp, and a workdir resumes with another value.
  """
  path: str
  default: Any
  affects: tuple[str, ...]
  doc: str
  type: Optional[type] = None
  absent: Any = options_lib.NOT_SET
  runtime: bool = False

  def omitted(self, value: Any) -> bool:
    """Whether `value` is left out of identities and stamps (`absent`)."""
    return options_lib.is_absent(self.absent, value)


_ALL = (W, S, T)
_NONE = ()

BASE: tuple[Field, ...] = (
    Field("seed", 0, _NONE, "seeds model init, data order, augmentation and "
          "random selection (given to every stage explicitly)"),
    Field("dataset.name", "digits", _ALL, "see mrmc_jax.data.load_dataset"),
    Field("dataset.data_dir", None, _ALL, "where tfds/local data live", str),
    Field("dataset.image_size", None, _ALL, "resize images to this side "
          "(None keeps them)", int),
    Field("dataset.input", "memory", _ALL, "memory (decode the splits into "
          "host memory) or stream (read a tfds set prepared as ArrayRecord "
          "by id)"),
    Field("dataset.rehash_files", False, _NONE, "streamed input: hash every "
          "ArrayRecord file again at this launch (False: files whose size "
          "and modification time are unchanged are checked by a sampled "
          "re-hash)", absent=False),
    Field("dataset.validation_fraction", 0.0, _ALL, "if > 0, hold out this "
          "stratified fraction of train and evaluate on it instead of test"),
    Field("dataset.validation_seed", 0, _ALL, "seed of the held-out split"),
    Field("dataset.label_noise", 0.0, _ALL, "label noise: this fraction "
          "in [0, 1) of the training labels (and of a validation split "
          "carved from them) flipped as dataset.label_noise_kind says; test "
          "labels untouched; flipped ids in noise/flipped.npy"),
    Field("dataset.label_noise_kind", "symmetric", _ALL, "symmetric (to a "
          "uniform other class), pairs:<map> (look-alike map: mnist, "
          "fashion_mnist), pairs:<a-b,c>d> (pair list) or matrix:<path> "
          "(C x C target matrix, .npy or text): each class with targets "
          "flips exactly that fraction of its labels",
          absent="symmetric"),
    Field("dataset.label_noise_seed", 0, _ALL, "seed of the flipped rows "
          "and labels (one noisy data set shared by every run seed)"),
    Field("model.name", "mlp", _ALL, "see mrmc_jax.models.create_model"),
    Field("model.dtype", "float32", _ALL, "float32 or bfloat16"),
    Field("selection.method", methods.DEFAULT_METHOD, _NONE, "the method "
          "spec of experiments/main.py, e.g. mrmc(skip_epochs=2) (given to the "
          "selection stage explicitly)"),
    Field("selection.ratio", 0.3, _NONE, "core-set fraction in (0, 1] "
          "(given to the selection stage explicitly)"),
    Field("selection.warmup_epochs", 10, _ALL, "R, epochs of warm-up on all "
          "data"),
    Field("selection.warmup_model", "", (W,), "a model for the warm-up only "
          "(selection via proxy, e.g. mlp_small); the core-sets train "
          "model.name; empty: model.name"),
    Field("selection.plugins", "", (S, T), "comma-separated .py files or "
          "modules of the user's own methods (each calls methods.register)"),
    Field("train.epochs", 20, _ALL, "core-set training epochs (and the "
          "truncated warm-up schedule's length)"),
    Field("train.budget", "epochs", (T,), "epochs: every ratio trains "
          "train.epochs epochs (the paper); steps: train.epochs epochs' "
          "worth of full-data steps"),
    Field("train.batch_size", 128, _ALL, "global training batch size"),
    Field("train.eval_batch_size", 512, _ALL, "global evaluation batch "
          "size"),
    Field("train.optimizer", "sgd", _ALL, "see mrmc_jax.optim"),
    Field("train.learning_rate", 0.1, _ALL, "peak learning rate"),
    Field("train.momentum", 0.9, _ALL, "SGD momentum"),
    Field("train.nesterov", False, _ALL, "Nesterov momentum"),
    Field("train.weight_decay", 5e-4, _ALL, "decoupled weight decay"),
    Field("train.schedule", "cosine", _ALL, "cosine, constant or "
          "warmup_cosine"),
    Field("train.end_learning_rate", 1e-4, _ALL, "the schedule's last "
          "learning rate"),
    Field("train.lr_warmup_epochs", 0.0, _ALL, "linear warm-up of "
          "warmup_cosine, in epochs of the stage it schedules (else 0)"),
    Field("train.warmup_schedule", "truncated", _ALL, "truncated (the "
          "warm-up follows the training schedule's first R epochs) or own"),
    Field("train.augment", True, _ALL, "random crops and flips"),
    Field("train.checkpoint_every_epochs", 1, _NONE, "checkpoint interval",
          runtime=True),
    Field("train.checkpoint_every_steps", 0, _NONE, "steps of an epoch "
          "between mid-epoch checkpoints (0: none; SIGTERM and a preemption "
          "notice save one either way)", runtime=True),
    Field("compare.methods", ",".join(methods.DEFAULT_COMPARED), _NONE,
          "experiments/compare.py: "
          "method specs, comma-separated (cells get them explicitly)"),
    Field("compare.ratios", "0.7,0.5,0.3,0.1", _NONE, "the grid's ratios"),
    Field("compare.seeds", "0,1,2", _NONE, "the grid's seeds"),
    Field("distributed.initialize", False, _NONE, "call "
          "jax.distributed.initialize"),
    Field("distributed.coordinator_address", None, _NONE, "its argument "
          "(None: auto-detected, as on TPU pods)", str),
    Field("distributed.num_processes", None, _NONE, "its argument", int),
    Field("distributed.process_id", None, _NONE, "its argument", int),
    Field("distributed.num_devices", None, _NONE, "mesh size (None: all "
          "devices); the result does not depend on it", int),
)

# experiments/attribution.py's fields (mrmc_jax/configs/attribution.py adds
# them).
ATTRIBUTION: tuple[Field, ...] = (
    Field("attribution.num_probes", 50, (T,), "m probes, stratified by "
          "class, among the examples in every core-set"),
    Field("attribution.ratios", "0.3,0.5,0.7", _NONE, "core-set ratios "
          "compared with full data (given to the stages explicitly)"),
    Field("attribution.method", methods.DEFAULT_METHOD, _NONE,
          "the method spec selecting "
          "the core-sets (given to the selection stage explicitly)"),
    Field("attribution.epochs", 10, (T,), "epochs each setting trains"),
    Field("attribution.seed", 0, (T,), "seeds the choice of probes"),
    Field("attribution.reference_runs", 1, (T,), "extra full-data runs with "
          "other data orders (the noise floor)"),
)


def option_fields(builtin_only: bool = False) -> tuple[Field, ...]:
  """`selection.<option>` for every declared option with a config field.

  Args:
    builtin_only: only the options the package's own methods read; a
      registered method's options become fields of the configs that load
      it (`selection.plugins`), never of every config of the process.
  """
  builtin = methods.option_readers(builtin_only=True)
  return tuple(Field(f"selection.{o.field}", o.default, (S, T), o.doc,
                     None if o.default is not None else o.type, o.absent)
               for o in _config_options(builtin_only, builtin))


def _config_options(builtin_only, builtin):
  return [o for o in methods.declared().values()
          if o.in_config and (not builtin_only or o.key in builtin)]


def legacy_fields(builtin_only: bool = False) -> tuple[Field, ...]:
  """The deprecated flat alias `selection.<legacy>` of each scoped option.

  None unless set; it affects nothing itself (`apply_legacy` moves its
  value onto the scoped field) and is in no identity (absent at None).
  """
  return tuple(Field(f"selection.{o.legacy}", None, _NONE,
                     f"deprecated: selection.{o.field}", o.type, absent=None)
               for o in _renamed(builtin_only))


def _renamed(builtin_only: bool = False) -> list[Any]:
  """The options with a config field whose flat name before 0.3.0 differs."""
  builtin = methods.option_readers(builtin_only=True)
  return [o for o in _config_options(builtin_only, builtin)
          if o.legacy and o.legacy != o.field]


def declared() -> dict[str, Field]:
  """Every declared field, path -> Field."""
  return {f.path: f for f in BASE + option_fields() + legacy_fields() +
          ATTRIBUTION}


def apply_legacy(config: ml_collections.ConfigDict) -> None:
  """Moves values set under a flat pre-0.3.0 name onto the scoped field.

  `--config.selection.d2_k=3` sets `selection.d2.k = 3` with a
  `DeprecationWarning` naming the new spelling and the release that
  removes the old; the alias goes back to None. Call before the config is
  checked or its identity taken.

  Raises:
    ValueError: both spellings set, to different values (one line).
  """
  for o in _renamed():
    path, node = f"selection.{o.legacy}", config.selection
    if o.legacy not in node or node[o.legacy] is None:
      continue
    value = node[o.legacy]
    scope = get(config, f"selection.{o.scope}")
    if scope[o.name] != o.default and scope[o.name] != value:
      raise ValueError(f"{path}={value!r} and selection.{o.field}="
                       f"{scope[o.name]!r} are both set: {path} is the "
                       f"deprecated spelling of selection.{o.field}; set "
                       "only that.")
    options_lib.deprecated(f"{path}", f"selection.{o.field}")
    scope[o.name] = value
    node[o.legacy] = None


def get(config: ml_collections.ConfigDict, path: str) -> Any:
  """The value at a dotted path, or None where the config lacks it."""
  node = config
  for p in path.split(".") if path else ():
    if not isinstance(node, ml_collections.ConfigDict) or p not in node:
      return None
    node = node[p]
  return node


def paper_values() -> dict[str, Any]:
  """The `paper` preset: `selection.<field>` -> the value each method
  option declares for it (`Option.paper`)."""
  return {f"selection.{o.field}": o.paper
          for o in methods.declared().values()
          if o.in_config and o.paper is not options_lib.NOT_SET}


def upgrade_identity(identity: dict[str, Any]) -> dict[str, Any]:
  """A stored run identity with flat pre-0.3.0 option names made scoped.

  `{"selection": {"d2_k": 5}}` reads as `{"selection": {"d2": {"k": 5}}}`,
  so that a workdir written before 0.3.0 matches the identity of the same
  config now. Any other identity is returned unchanged.
  """
  sel = identity.get("selection") if isinstance(identity, dict) else None
  legacy = options_lib.legacy_names()
  if not isinstance(sel, dict) or not set(sel) & set(legacy):
    return identity
  new_sel = {}
  for key, value in sel.items():
    o = legacy.get(key)
    if o is None or o.legacy == o.field or not o.in_config:
      new_sel[key] = value
    else:
      new_sel.setdefault(o.scope, {})[o.name] = value
  return {**identity, "selection": new_sel}


def identity_path(path: str) -> str:
  """The name of a field in stage stamps: an option's `selection.<key>`."""
  for o in methods.declared().values():
    if o.in_config and path == f"selection.{o.field}":
      return f"selection.{o.key}"
  return path


def _add(config: ml_collections.ConfigDict, fields) -> None:
  for f in fields:
    *parents, leaf = f.path.split(".")
    node = config
    for p in parents:
      if p not in node:
        node[p] = ml_collections.ConfigDict()
      node = node[p]
    if f.default is None:
      node[leaf] = ml_collections.FieldReference(None, field_type=f.type)
    else:
      node[leaf] = f.default


def add_option_fields(config: ml_collections.ConfigDict) -> None:
  """Adds `selection.<option>` for each declared option the config lacks.

  After `selection.plugins` are loaded, so that a user method's options
  become fields of the config that names it (settable as overrides).
  """
  _add(config, [f for f in option_fields() + legacy_fields()
                if not has(config, f.path)])


def has(config: ml_collections.ConfigDict, path: str) -> bool:
  """Whether the config has a field at the dotted path."""
  *parents, leaf = path.split(".")
  node = get(config, ".".join(parents))
  return isinstance(node, ml_collections.ConfigDict) and leaf in node


def base_config() -> ml_collections.ConfigDict:
  """The base config: every field of `BASE` and the built-in methods' options."""
  config = ml_collections.ConfigDict()
  # The options go after selection.warmup_epochs, as they always did.
  cut = [f.path for f in BASE].index("selection.warmup_epochs") + 1
  _add(config, BASE[:cut])
  _add(config, option_fields(builtin_only=True))
  _add(config, BASE[cut:])
  _add(config, legacy_fields(builtin_only=True))
  return config


def add_attribution(config: ml_collections.ConfigDict) -> None:
  """Adds the `attribution.*` fields with their defaults."""
  _add(config, ATTRIBUTION)


def leaves(config: ml_collections.ConfigDict, prefix: str = ""
           ) -> Iterator[tuple[str, Any]]:
  """(dotted path, value) of every leaf field."""
  for key, value in config.items():
    path = prefix + key
    if isinstance(value, ml_collections.ConfigDict):
      yield from leaves(value, path + ".")
    else:
      yield path, value


def unknown_field(path: str, known: Iterable[str], quote: bool = False
                  ) -> str:
  """`unknown field X (did you mean Y?)`, Y the closest of `known`, if any.

  The one wording of an unknown field, for a config's own field
  (`check_known`) and for an override (`check_field`).

  Args:
    path: the dotted field.
    known: the dotted fields it may have meant.
    quote: name the fields quoted, as typed in a `field=value` override.
  """
  import difflib  # pylint: disable=g-import-not-at-top
  show = repr if quote else str
  close = difflib.get_close_matches(path, list(known), n=1)
  hint = f" (did you mean {show(close[0])}?)" if close else ""
  return f"unknown field {show(path)}{hint}"


def check_known(config: ml_collections.ConfigDict) -> None:
  """Refuses a field that is not declared (its cache effect is unknown).

  Raises:
    ValueError: `unknown field X (did you mean Y?)`, one line.
  """
  known = declared()
  for path, _ in leaves(config):
    if path not in known:
      raise ValueError(f"{unknown_field(path, known)}: every config field is "
                       "declared in mrmc_jax/runner/fields.py, or is a "
                       "declared method option (selection.<option>).")


def check_field(config: ml_collections.ConfigDict, key: str) -> None:
  """Refuses a dotted `key` that `config` lacks (a `key=value` override).

  Raises:
    ValueError: `unknown field 'X' (did you mean 'Y'?).`, one line, Y
      among the config's fields and groups.
  """
  node = config
  for p in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or p not in node:
      parts = [path.split(".") for path, _ in leaves(config)]
      names = {".".join(q[:i]) for q in parts for i in range(1, len(q) + 1)}
      raise ValueError(f"{unknown_field(key, names, quote=True)}.")
    node = node[p]


def affecting(config: ml_collections.ConfigDict, stage: str
              ) -> dict[str, Any]:
  """The values of the fields that affect `stage`, path -> value."""
  known = declared()
  # Options by their keys: the stamps of the flat names before 0.3.0.
  return {identity_path(path): value for path, value in leaves(config)
          if stage in known[path].affects
          and not known[path].omitted(value)}


def drop_absent(identity: dict[str, Any]) -> dict[str, Any]:
  """A run identity (nested dict) less the fields at their `absent` value
  and the `runtime` fields.

  Applied to the identity a run writes and to the one a workdir holds, so
  that a field added after that workdir was written, at its `absent`
  value, matches its absence, and a workdir that stored a runtime field
  (written before 0.2.0 left them out) resumes with any value of it.
  """
  known = declared()

  def walk(node, prefix):
    out = {}
    for key, value in node.items():
      path = prefix + key
      if isinstance(value, dict):
        inner = walk(value, path + ".")
        if inner or not value:  # A group of absent options only: none.
          out[key] = inner
      elif not (path in known and (known[path].omitted(value) or
                                   known[path].runtime)):
        out[key] = value
    return out

  return walk(identity, "")
