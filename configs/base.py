"""The full set of config fields, with their defaults; every config starts here.

Fields (the interface users and scripts rely on; see README.md):
  seed: seeds model init, data order, augmentation and random selection.
  dataset.name / dataset.data_dir: see `mrmc_jax.datasets.load_dataset`.
  dataset.image_size: resize images to this side (None keeps them).
  dataset.input: "memory" (decode the splits into host memory) or "stream"
    (read a tfds set prepared as ArrayRecord by id; see mrmc_jax/streaming.py).
  dataset.validation_fraction: if > 0, hold out this stratified fraction of
    the train split (seed dataset.validation_seed) and evaluate on it instead
    of the test split (for choosing knobs without touching test).
  model.name: see `mrmc_jax.models.create_model`; model.dtype: float32|bfloat16.
  selection.method: mrmc, mrmc_r, random, full, el2n, grand, forgetting, ccs,
    moderate, dyn_unc, d2, dual, mrmc_ra; optionally with option overrides, e.g.
    "mrmc(loss_source=eval;skip_epochs=2)" (see mrmc_jax/methods/options.py).
  selection.ratio: core-set fraction in (0, 1].
  selection.class_balanced: per-class quotas (True) or global top-k.
  selection.warmup_epochs: R, epochs of warm-up on all data.
  selection.loss_source: "train" (the training forward pass) or "eval" (a
    separate evaluation pass over the training set after each epoch).
  selection.skip_epochs: burn-in epochs left out of the fit.
  selection.score: "literal" q(1-w^-R) or "observed" q(w^-r1 - w^-rR).
  selection.max_initial_ratio: bound on the fitted epoch-0 loss.
  selection.epoch_offset: 1 fits r = 1..R (paper), 0 fits r = 0..R-1.
  selection.rho / gamma / score_scale / proxy_*: MRMC-R.
  selection.ra_cut / ra_shape / ra_form: ratio-aware MRMC (mrmc_ra).
  selection.dual_window / dual_c_d: DUAL; selection.d2_mis_ratio: D2's
    pre-step that drops the hardest examples (lowest mean p_true) of the
    whole set (of each class with selection.d2_mis_per_class).
  train.*: optimiser and schedule for warm-up and core-set training;
    train.schedule: cosine, constant or warmup_cosine (with
    train.lr_warmup_epochs > 0 epochs of linear warm-up).
  compare.methods / ratios / seeds: the grid of experiments/compare.py,
    comma-separated (method specs may carry overrides, see above).
  distributed.initialize / coordinator_address / num_processes / process_id:
    arguments of `jax.distributed.initialize` (None: auto-detected, as on TPU
    pods); distributed.num_devices: mesh size (None: all devices).
"""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  """Returns the base config (the digits default's shape, paper optimiser)."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "digits"
  config.dataset.data_dir = ml_collections.FieldReference(None, field_type=str)
  config.dataset.image_size = ml_collections.FieldReference(None,
                                                            field_type=int)
  # "memory": decode the splits into host memory; "stream": read a tfds set
  # prepared as ArrayRecord by id, each process only its rows of each batch.
  config.dataset.input = "memory"
  config.dataset.validation_fraction = 0.0
  config.dataset.validation_seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.name = "mlp"
  config.model.dtype = "float32"

  config.selection = ml_collections.ConfigDict()
  config.selection.method = "mrmc"
  config.selection.ratio = 0.3
  config.selection.class_balanced = True
  config.selection.warmup_epochs = 10
  config.selection.loss_source = "train"
  config.selection.skip_epochs = 0
  config.selection.score = "literal"
  config.selection.max_initial_ratio = 2.0
  config.selection.epoch_offset = 1
  # MRMC-R (paper defaults).
  config.selection.rho = 0.3
  config.selection.gamma = 2.0
  config.selection.score_scale = "none"
  config.selection.proxy_learning_rate = 0.01
  config.selection.proxy_batch_size = 512
  config.selection.proxy_epochs = 10
  # Peer methods.
  config.selection.el2n_epochs = ml_collections.FieldReference(None,
                                                               field_type=int)
  config.selection.dyn_unc_window = 10
  config.selection.ccs_beta = 0.1
  config.selection.ccs_strata = 50
  config.selection.ccs_score = "forgetting"
  config.selection.d2_k = 5
  config.selection.d2_gamma = 1.0
  config.selection.d2_gamma_reverse = 0.1
  config.selection.d2_score = "forgetting"
  config.selection.d2_mis_ratio = 0.1
  config.selection.d2_mis_per_class = False
  config.selection.dual_window = 10
  config.selection.dual_c_d = 4.0
  # mrmc_ra's knobs, chosen on a validation split (docs/results/).
  config.selection.ra_cut = 0.0
  config.selection.ra_shape = 8.0
  config.selection.ra_form = "conf"
  config.selection.ra_anchor = 0.01
  # The ablation: "shuffled" permutes MRMC's scores within each class for
  # the rank and the anchor, "shuffled_rank" / "shuffled_anchor" for one;
  # "none" uses no MRMC input (anchor fixed at 0.5, no rank factor).
  config.selection.ra_score = "mrmc"

  config.train = ml_collections.ConfigDict()
  config.train.epochs = 20
  # "epochs": every ratio trains train.epochs epochs (the paper). "steps": a
  # fixed number of updates, train.epochs epochs' worth of full-data steps.
  config.train.budget = "epochs"
  config.train.batch_size = 128
  config.train.eval_batch_size = 512
  config.train.optimizer = "sgd"
  config.train.learning_rate = 0.1
  config.train.momentum = 0.9
  config.train.nesterov = False
  config.train.weight_decay = 5e-4
  config.train.schedule = "cosine"
  config.train.end_learning_rate = 1e-4
  # Linear learning-rate warm-up of train.schedule="warmup_cosine", in
  # epochs of the stage it schedules (0 for the other schedules).
  config.train.lr_warmup_epochs = 0.0
  config.train.warmup_schedule = "truncated"
  config.train.augment = True
  config.train.checkpoint_every_epochs = 1
  # Steps of an epoch between mid-epoch checkpoints (0: none). SIGTERM and
  # a preemption notice save one at the step they arrive either way.
  config.train.checkpoint_every_steps = 0

  # experiments/compare.py: methods x ratios x seeds (comma-separated).
  config.compare = ml_collections.ConfigDict()
  config.compare.methods = ("full,random,el2n,grand,forgetting,ccs,moderate,"
                            "dyn_unc,d2,mrmc,mrmc_r")
  config.compare.ratios = "0.7,0.5,0.3,0.1"
  config.compare.seeds = "0,1,2"

  config.distributed = ml_collections.ConfigDict()
  config.distributed.initialize = False
  config.distributed.coordinator_address = ml_collections.FieldReference(
      None, field_type=str)
  config.distributed.num_processes = ml_collections.FieldReference(
      None, field_type=int)
  config.distributed.process_id = ml_collections.FieldReference(
      None, field_type=int)
  # Devices of the data-parallel mesh: None uses every device of every
  # process; n uses the first n (one process only), e.g. 1 to check that a
  # run on 8 devices selects the same core-set as a run on one.
  config.distributed.num_devices = ml_collections.FieldReference(
      None, field_type=int)
  return config


def apply_overrides(config: ml_collections.ConfigDict, arg: str | None,
                    known: tuple[str, ...] = ()
                    ) -> ml_collections.ConfigDict:
  """Applies `key=value,...` from a config string argument.

  `--config=configs/cifar10.py:quick,selection.ratio=0.1` gives arg
  `"quick,selection.ratio=0.1"`; bare words are presets (`paper` is handled
  here, others by the config file, which names them in `known`), `a.b=v`
  pairs set fields (values parsed as Python literals).

  Raises:
    ValueError: a bare word that is neither `paper` nor in `known` (a
      typo would otherwise silently run the config without its preset).
  """
  import ast
  if not arg:
    return config
  unknown = sorted(presets(arg) - {"paper", *known})
  if unknown:
    raise ValueError(f"unknown preset {unknown[0]!r}: this config knows "
                     f"{', '.join(sorted({'paper', *known}))} (and "
                     "field=value overrides).")
  if "paper" in presets(arg):
    paper_preset(config)
  for item in arg.split(","):
    if "=" not in item:
      continue
    key, value = item.split("=", 1)
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
    set_fields(config, {key.strip(): value})
  return config


def set_fields(config: ml_collections.ConfigDict, fields: dict
               ) -> ml_collections.ConfigDict:
  """Sets dotted fields, e.g. `{"train.epochs": 1}`; returns the config.

  Raises:
    ValueError: an unknown field, named with the closest known one.
  """
  for key, value in fields.items():
    check_field(config, key)
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def check_field(config: ml_collections.ConfigDict, key: str) -> None:
  """Raises `ValueError` "unknown field X (did you mean Y?)" for a bad key."""
  node = config
  for p in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or p not in node:
      raise ValueError(f"unknown field {key!r}{_did_you_mean(config, key)}.")
    node = node[p]


def _did_you_mean(config: ml_collections.ConfigDict, key: str) -> str:
  import difflib  # pylint: disable=g-import-not-at-top

  def names(node, prefix=""):
    for k, v in node.items():
      yield prefix + k
      if isinstance(v, ml_collections.ConfigDict):
        yield from names(v, prefix + k + ".")

  close = difflib.get_close_matches(key, list(names(config)), n=1)
  return f" (did you mean {close[0]!r}?)" if close else ""


def presets(arg: str | None) -> set[str]:
  """Bare words of a config string argument, e.g. {"quick"}."""
  return {w.strip() for w in (arg or "").split(",")
          if w.strip() and "=" not in w}


def without_presets(arg: str | None, words) -> str:
  """`arg` less the given bare words (for a config that handles them)."""
  return ",".join(w for w in (arg or "").split(",")
                  if w.strip() and w.strip() not in words)


def paper_preset(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """MRMC exactly as the paper writes it, for reproducing its setting.

  Global top-k without class quotas, the literal score q(1 - w^-R) fitted on
  epochs 1..R with (practically) no bound on the extrapolated epoch-0 loss,
  the training-pass loss, no burn-in, and MRMC-R's regulariser on the raw
  score scale. `configs/X.py:paper` selects it.
  """
  sel = config.selection
  sel.class_balanced = False
  sel.loss_source = "train"
  sel.skip_epochs = 0
  sel.score = "literal"
  sel.epoch_offset = 1
  sel.max_initial_ratio = 1e30
  sel.rho = 0.3
  sel.gamma = 2.0
  sel.score_scale = "none"
  return config

