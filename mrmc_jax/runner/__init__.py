"""The experiment runner: the first client of the `mrmc_jax` library.

Only this package reads configs and workdirs; library modules never import
it (a test checks the import graph). Modules:
  config       config checks and what the config means as explicit settings.
  context      `Context`: data, model, mesh and the explicit settings.
  loop         the one epoch loop: checkpoint/restore, progress, metrics.
  warmup       the warm-up's epochs: R on all data, recording the trajectory.
  fields       every config field: default, doc, the stages it affects.
  stages       the stages (load, warm-up, select, train, evaluate), each
               with its stamp and done-check; the jobs below compose them.
  experiment   `train_and_evaluate`: warm-up, selection, core-set training.
  compare      methods x ratios x seeds from one warm-up per seed.
  attribution  the loss-reduction attribution measurement.
  workdir, metrics_io, plots, cli: files, metrics, figures, entry points.
  storage      local and object-store (gs://) files, the lease, decide_once.
"""
