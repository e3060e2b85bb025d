"""Optimisers and learning-rate schedules built from explicit arguments."""

import optax

from mrmc_jax import validation

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("cosine", "constant", "warmup_cosine")


def make_optimizer(*,
                   optimizer: str,
                   learning_rate: float,
                   total_steps: int,
                   momentum: float = 0.9,
                   nesterov: bool = False,
                   weight_decay: float = 0.0,
                   schedule: str = "cosine",
                   end_learning_rate: float = 0.0,
                   warmup_steps: int = 0
                   ) -> optax.GradientTransformation:
  """Returns the optimiser with coupled weight decay and its LR schedule.

  Weight decay is added to the gradient before momentum (`add_decayed_weights`
  then SGD), as in the paper's PyTorch setting.

  Args:
    optimizer: "sgd" (with momentum) or "adam".
    learning_rate: the peak learning rate.
    total_steps: length of the schedule in updates.
    momentum: SGD momentum (0 disables it).
    nesterov: Nesterov momentum.
    weight_decay: L2 coefficient added to the gradient.
    schedule: "cosine" (peak to `end_learning_rate` over `total_steps`),
      "constant", or "warmup_cosine" (see `make_schedule`).
    end_learning_rate: final value of the cosine schedule.
    warmup_steps: linear warm-up length of "warmup_cosine".

  Returns:
    An optax `GradientTransformation`.

  Raises:
    ValueError: on an unknown optimiser or schedule, or total_steps < 1.
  """
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"optimizer={optimizer!r} is not allowed: use one of "
                     f"{OPTIMIZERS}.")
  lr = make_schedule(learning_rate=learning_rate, total_steps=total_steps,
                     schedule=schedule, end_learning_rate=end_learning_rate,
                     warmup_steps=warmup_steps)
  if optimizer == "sgd":
    main = optax.sgd(lr, momentum=momentum or None, nesterov=nesterov)
  else:
    main = optax.adam(lr)
  if weight_decay:
    return optax.chain(optax.add_decayed_weights(weight_decay), main)
  return main


def make_schedule(*,
                  learning_rate: float,
                  total_steps: int,
                  schedule: str = "cosine",
                  end_learning_rate: float = 0.0,
                  warmup_steps: int = 0) -> optax.Schedule:
  """The learning-rate schedule that `make_optimizer` uses.

  Public so that code which needs the learning rate of a given update (the
  loss-reduction attribution) reads the very schedule the optimiser runs.

  Args:
    learning_rate: the peak learning rate.
    total_steps: length of the schedule in updates.
    schedule: "cosine" (peak to `end_learning_rate` over `total_steps`),
      "constant", or "warmup_cosine": linear from 0 to the peak over
      `warmup_steps` updates, then cosine to `end_learning_rate` at
      `total_steps` (optax's `warmup_cosine_decay_schedule`; the learning-rate
      warm-up that large-batch training needs, Goyal et al., 2017).
    end_learning_rate: final value of the cosine schedules.
    warmup_steps: warm-up length of "warmup_cosine", in [1, total_steps);
      must be 0 for the other schedules.

  Returns:
    `schedule(count) -> learning rate`, where `count` is the number of
    updates already applied (optax's convention).

  Raises:
    ValueError: on an unknown schedule, total_steps < 1 or a warmup_steps
      outside its range.
  """
  if schedule not in SCHEDULES:
    raise ValueError(f"schedule={schedule!r} is not allowed: use one of "
                     f"{SCHEDULES}.")
  validation.check_int(total_steps, "total_steps")
  if schedule == "warmup_cosine":
    validation.check_int(warmup_steps, "warmup_steps")
    if warmup_steps >= total_steps:
      raise ValueError(f"warmup_steps={warmup_steps} must be less than "
                       f"total_steps={total_steps}")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=learning_rate, warmup_steps=warmup_steps,
        decay_steps=total_steps, end_value=end_learning_rate)
  if warmup_steps:
    raise ValueError(f"warmup_steps={warmup_steps} needs "
                     f"schedule='warmup_cosine', not {schedule!r}")
  if schedule == "cosine":
    return optax.cosine_decay_schedule(
        learning_rate, total_steps,
        alpha=end_learning_rate / learning_rate if learning_rate else 0.0)
  return optax.constant_schedule(learning_rate)
