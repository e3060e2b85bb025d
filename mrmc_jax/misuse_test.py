"""The misuse table: everyday mistakes with the library, none silent.

One row per mistake. Each is refused with a `ValueError` that names the
argument, or, where the mistake is only visible in traced values under
`jax.jit`, caught by the checked mode (`checking.checked`); where a
traced value cannot be refused, the tests also pin what the plain jitted
function does instead (drop, never wrap).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mrmc_jax import checking
from mrmc_jax import losses
from mrmc_jax import scoring
from mrmc_jax import selection
from mrmc_jax import sharding
from mrmc_jax import train_step
from mrmc_jax import trajectory

B, C, N, R = 4, 3, 6, 2


class _Tiny(nn.Module):

  @nn.compact
  def __call__(self, x, train=True):
    del train
    return nn.Dense(C)(x.reshape(x.shape[0], -1))


def _batch(**changes):
  batch = {"image": jnp.ones((B, 2)), "label": jnp.array([0, 1, 2, 0]),
           "id": jnp.array([0, 1, 2, 3]), "mask": jnp.ones(B, bool)}
  batch.update(changes)
  return batch


def _state():
  model = _Tiny()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 2)))
  return (train_step.module_apply_fn(model),
          train_step.create_train_state(variables, optax.sgd(0.1)))


def _step(loss_fn=None):
  apply_fn, state = _state()
  return train_step.make_train_step(apply_fn, optax.sgd(0.1),
                                    loss_fn=loss_fn), state


def _stats(ids=(0, 1, 2, 3), mask=(True,) * B):
  loss = jnp.arange(1.0, B + 1.0)
  return {"id": jnp.asarray(ids), "mask": jnp.asarray(mask), "loss": loss,
          "correct": loss > 2, "p_true": loss / 10, "el2n": loss / 5}


LOGITS = jnp.zeros((B, C))
LABELS = jnp.array([0, 1, 2, 0])
MASK = jnp.ones(B, bool)
SCORES = jnp.array([0.5, 0.1, 0.9, 0.3, 0.7, 0.2])
SEL_LABELS = jnp.array([0, 1, 2, 0, 1, 2])

# (name, call, message): each call must raise ValueError matching message.
REFUSED = [
    # per_example_stats
    ("stats: reduced (scalar) loss",
     lambda: losses.per_example_stats(LOGITS, LABELS, MASK,
                                      loss=jnp.float32(0.7)),
     r"loss has shape \(\); expected float \[B\]"),
    ("stats: label == C",
     lambda: losses.per_example_stats(LOGITS, jnp.array([0, 1, 3, 0]), MASK),
     r"labels\[2\] = 3 is outside \[0, 3\)"),
    ("stats: label -1",
     lambda: losses.per_example_stats(LOGITS, jnp.array([0, -1, 2, 0]), MASK),
     r"labels\[1\] = -1 is outside \[0, 3\)"),
    ("stats: [B, 1] labels",
     lambda: losses.per_example_stats(LOGITS, LABELS[:, None], MASK),
     r"labels has shape \(4, 1\); expected int \[B\]"),
    ("stats: [B, 1] loss",
     lambda: losses.per_example_stats(LOGITS, LABELS, MASK,
                                      loss=jnp.ones((B, 1))),
     r"loss has shape \(4, 1\)"),
    ("stats: 1-D logits",
     lambda: losses.per_example_stats(jnp.zeros(B), LABELS, MASK),
     r"logits has shape \(4,\); expected \[B, C\]"),
    ("stats: float labels",
     lambda: losses.per_example_stats(LOGITS, LABELS.astype(jnp.float32)),
     r"labels has dtype float32; expected an integer"),
    # make_train_step
    ("step: label == C (eager)",
     lambda: _step()[0](_step()[1], _batch(label=jnp.array([0, 1, 3, 0]))),
     r"labels\[2\] = 3 is outside \[0, 3\)"),
    ("step: [B, 1] labels (under jit)",
     lambda: jax.jit(_step()[0])(_step()[1], _batch(label=LABELS[:, None])),
     r"batch\['label'\] has shape \(4, 1\)"),
    ("step: loss_fn returns its mean",
     lambda: jax.jit(_step(lambda lg, y: jnp.mean(
         optax.softmax_cross_entropy_with_integer_labels(lg, y)))[0])(
             _step()[1], _batch()),
     r"loss_fn's output has shape \(\); expected float \[B\]"),
    ("step: batch without 'mask'",
     lambda: jax.jit(_step()[0])(_step()[1], {
         k: v for k, v in _batch().items() if k != "mask"}),
     r"the batch has keys \['id', 'image', 'label'\].*missing \['mask'\]"),
    ("step: batch with 'x'/'y' keys",
     lambda: jax.jit(_step()[0])(_step()[1], {
         "x": jnp.ones((B, 2)), "y": LABELS, "id": LABELS, "mask": MASK}),
     r"missing \['image', 'label'\]"),
    # record and make_recording_step
    ("record: id -1 (eager)",
     lambda: trajectory.record(trajectory.init_trajectory(N, R),
                               _stats(ids=(0, -1, 2, 3)), 0),
     r"stats\['id'\]\[1\] = -1 is outside \[0, 6\)"),
    ("record: id >= N (eager)",
     lambda: trajectory.record(trajectory.init_trajectory(N, R),
                               _stats(ids=(0, 6, 2, 3)), 0),
     r"stats\['id'\]\[1\] = 6 is outside \[0, 6\)"),
    ("record: epoch -1 (eager)",
     lambda: trajectory.record(trajectory.init_trajectory(N, R), _stats(), -1),
     r"epoch = -1 is outside \[0, 2\)"),
    ("record: epoch == R (eager)",
     lambda: trajectory.record(trajectory.init_trajectory(N, R), _stats(), R),
     r"epoch = 2 is outside \[0, 2\)"),
    ("record: [B, 1] ids (under jit)",
     lambda: jax.jit(trajectory.record)(
         trajectory.init_trajectory(N, R),
         {**_stats(), "id": jnp.arange(B)[:, None]}, 0),
     r"stats\['id'\] has shape \(4, 1\)"),
    ("record: stats without 'correct'",
     lambda: trajectory.record(trajectory.init_trajectory(N, R), {
         k: v for k, v in _stats().items() if k != "correct"}, 0),
     r"missing \['correct'\]"),
    ("record: float epoch",
     lambda: trajectory.record(trajectory.init_trajectory(N, R), _stats(),
                               0.0),
     r"epoch has dtype float"),
    ("recording step: [B, 1] ids (under jit)",
     lambda: jax.jit(trajectory.make_recording_step(_step()[0]))(
         _step()[1], trajectory.init_trajectory(N, R),
         _batch(id=jnp.arange(B)[:, None]), 0),
     r"batch\['id'\] has shape \(4, 1\)"),
    # select_mask
    ("select: label >= C",
     lambda: selection.select_mask(SCORES, SEL_LABELS.at[0].set(3), 0.5,
                                   num_classes=C),
     r"labels\[0\] = 3 is outside \[0, 3\)"),
    ("select: NaN score",
     lambda: selection.select_mask(SCORES.at[2].set(jnp.nan), SEL_LABELS,
                                   0.5, num_classes=C),
     r"scores holds 1 NaN values \(first at index 2\)"),
    ("select: [N, 1] scores (under jit)",
     lambda: jax.jit(lambda s, l: selection.select_mask(
         s, l, 0.5, num_classes=C))(SCORES[:, None], SEL_LABELS),
     r"scores has shape \(6, 1\); expected a 1-D \[N\]"),
    ("select: float labels (under jit)",
     lambda: jax.jit(lambda s, l: selection.select_mask(
         s, l, 0.5, num_classes=C))(SCORES, SEL_LABELS.astype(jnp.float32)),
     r"labels has dtype float32; expected an integer"),
    ("select: quotas of length C - 1 (under jit)",
     lambda: jax.jit(lambda s, l, q: selection.select_mask(
         s, l, num_classes=C, quotas=q))(SCORES, SEL_LABELS,
                                         jnp.ones(C - 1, jnp.int32)),
     r"quotas has shape \(2,\); expected int \[C\]"),
    ("select: candidates= under jit",
     lambda: jax.jit(lambda s, l, c: selection.select_mask(
         s, l, 0.5, num_classes=C, candidates=c))(SCORES, SEL_LABELS,
                                                  jnp.ones(N, bool)),
     r"candidates=\) needs concrete arrays"),
    # Silent before 0.3: duplicates, empty selections, unknown fields,
    # containers and traced static arguments.
    ("record: an id twice in one batch (eager)",
     lambda: trajectory.record(trajectory.init_trajectory(N, R),
                               _stats(ids=(0, 1, 1, 3)), 0),
     r"stats\['id'\] holds id 1 on 2 real rows"),
    ("recording step: an id twice in one batch (eager ids)",
     lambda: trajectory.make_recording_step(_step()[0])(
         _step()[1], trajectory.init_trajectory(N, R),
         _batch(id=jnp.array([0, 2, 2, 3])), 0),
     r"batch\['id'\] holds id 2 on 2 real rows"),
    ("select: a ratio that selects nothing",
     lambda: selection.select_mask(SCORES, SEL_LABELS, 0.1, num_classes=C),
     r"ratio=0.1 selects floor\(0.1 \* N\) = 0 of N=6 examples"),
    ("trajectory: an unknown field",
     lambda: trajectory.init_trajectory(N, R, fields=("los",)),
     r"holds unknown names \['los'\]; allowed: 'loss'"),
    ("step: a dict state",
     lambda: _step()[0]({"params": _step()[1].params}, _batch()),
     r"got a state of type dict"),
    ("stats: logits as a list",
     lambda: losses.per_example_stats([[0.0] * C] * B, LABELS),
     r"logits has type list; expected a jax or numpy array"),
    ("record: ids as a list",
     lambda: trajectory.record(trajectory.init_trajectory(N, R),
                               {**_stats(), "id": [0, 1, 2, 3]}, 0),
     r"stats\['id'\] has type list; expected a jax or numpy array"),
    ("select: scores as a list",
     lambda: selection.select_mask([0.0] * N, SEL_LABELS, 0.5, num_classes=C),
     r"scores has type list; expected a jax or numpy array"),
    ("select: scores of a transposed [R, N] trajectory",
     lambda: selection.select_mask(
         scoring.mrmc_scores(jnp.ones((N, R)).T), SEL_LABELS, 0.5,
         num_classes=C),
     r"scores has 2 rows and labels 6.*transposed \[R, N\]"),
    ("select: a traced ratio",
     lambda: jax.jit(lambda r: selection.select_mask(
         SCORES, SEL_LABELS, r, num_classes=C))(0.5),
     r"ratio is traced .* static"),
    ("scores: a traced epoch_offset",
     lambda: jax.jit(lambda k: scoring.mrmc_scores(
         jnp.ones((N, R)), epoch_offset=k))(1),
     r"epoch_offset is traced"),
    ("create_train_state: a list of variables",
     lambda: train_step.create_train_state([1, 2], optax.sgd(0.1)),
     r"variables has type list; expected the dict of model.init"),
    ("grad norms: images as a list",
     lambda: losses.per_example_grad_norms(
         lambda v, x: x, {"params": {}}, [[0.0]] * B, LABELS),
     r"images has type list; expected a jax or numpy array"),
    ("shard_batch: a list batch",
     lambda: sharding.shard_batch([np.zeros(8)], sharding.make_mesh()),
     r"local_batch has type list; expected a dict"),
    ("checked: not a function",
     lambda: checking.checked(3),
     r"checked got fn of type int; expected a function"),
    ("budget: a traced ratio",
     lambda: jax.jit(lambda r: selection.budget(r, 10))(0.5),
     r"ratio is traced"),
    ("class_quotas: a traced ratio",
     lambda: jax.jit(lambda r: selection.class_quotas(
         np.asarray(SEL_LABELS), C, r))(0.5),
     r"ratio is traced"),
    ("record: a traced sharded flag",
     lambda: jax.jit(lambda s: trajectory.record(
         trajectory.init_trajectory(N, R), _stats(), 0, sharded=s))(True),
     r"sharded is traced"),
    ("init_trajectory: a traced size",
     lambda: jax.jit(lambda n: trajectory.init_trajectory(n, R))(N),
     r"num_examples is traced"),
    # mrmc_scores (eagerly; under jit see the checked table)
    ("scores: NaN loss (eager)",
     lambda: scoring.mrmc_scores(jnp.array([[1.0, 0.5], [jnp.nan, 0.1]])),
     r"losses\[1, 0\] = nan"),
]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name,call,message", REFUSED,
                         ids=[r[0] for r in REFUSED])
def test_refused_with_a_clear_error(name, call, message):
  del name
  with pytest.raises(ValueError, match=message):
    call()


def _recording(batch, epoch):
  step, state = _step()
  rec = jax.jit(trajectory.make_recording_step(step))
  return rec, (state, trajectory.init_trajectory(N, R), batch, epoch)


# (name, fn, args, message): `fn(*args)` runs silently under plain jit (the
# value is only traced) and raises in the checked mode with `message`.
CHECKED = [
    ("step: label == C under jit",
     *_recording(_batch(label=jnp.array([0, 1, 3, 0])), jnp.int32(0)),
     r"label .*= 3 is outside \[0, 3\)"),
    ("step: label -1 under jit",
     *_recording(_batch(label=jnp.array([0, -1, 2, 0])), jnp.int32(0)),
     r"label .*= -1 is outside \[0, 3\)"),
    ("step: non-finite logits under jit",
     *_recording(_batch(image=jnp.ones((B, 2)).at[1, 0].set(jnp.inf)),
                 jnp.int32(0)),
     r"logits .* is not finite"),
    ("record: id -1 under jit",
     *_recording(_batch(id=jnp.array([0, -1, 2, 3])), jnp.int32(0)),
     r"id .*= -1 is outside \[0, 6\)"),
    ("record: id >= N under jit",
     *_recording(_batch(id=jnp.array([0, 1, 2, 6])), jnp.int32(0)),
     r"id .*= 6 is outside \[0, 6\)"),
    ("record: epoch -1 under jit",
     *_recording(_batch(), jnp.int32(-1)),
     r"epoch .*= -1 is outside \[0, 2\)"),
    ("record: epoch == R under jit",
     *_recording(_batch(), jnp.int32(R)),
     r"epoch .*= 2 is outside \[0, 2\)"),
    ("record: an id twice in one batch under jit",
     *_recording(_batch(id=jnp.array([0, 1, 1, 3])), jnp.int32(0)),
     r"id .* appears on two real rows of one batch"),
    ("select: a quota over its class under jit",
     jax.jit(lambda s, l, q: selection.select_mask(s, l, num_classes=C,
                                                   quotas=q)),
     (SCORES, SEL_LABELS, jnp.array([3, 1, 1])),
     r"a quota exceeds the eligible examples of its class"),
    ("select: label >= C under jit",
     jax.jit(lambda s, l: selection.select_mask(s, l, 0.5, num_classes=C)),
     (SCORES, SEL_LABELS.at[0].set(3)),
     r"label .*= 3 is outside \[0, 3\)"),
    ("select: NaN score under jit",
     jax.jit(lambda s, l: selection.select_mask(s, l, 0.5, num_classes=C)),
     (SCORES.at[2].set(jnp.nan), SEL_LABELS),
     r"score \(flat index 2\) is NaN"),
    ("scores: NaN loss under jit",
     jax.jit(scoring.mrmc_scores),
     (jnp.array([[1.0, 0.5], [jnp.nan, 0.1]]),),
     r"losses \(flat index 2\) = nan is not finite"),
    ("scores: negative loss under jit",
     jax.jit(scoring.mrmc_scores),
     (jnp.array([[1.0, 0.5], [-1.0, 0.1]]),),
     r"negative valid entry \(flat index 2\)"),
]


@pytest.mark.parametrize("name,fn,args,message", CHECKED,
                         ids=[r[0] for r in CHECKED])
def test_traced_mistakes_raise_in_the_checked_mode(name, fn, args, message):
  del name
  jax.block_until_ready(fn(*args))  # plain jit: no error (values traced)
  with pytest.raises(checking.CheckError, match=message):
    checking.checked(fn)(*args)


def test_traced_out_of_range_ids_and_epochs_are_dropped_not_wrapped():
  # Under plain jit a bad id or epoch cannot be refused: its row is dropped
  # like padding. Row N-1 and the last column stay untouched (no wrap).
  rec = jax.jit(trajectory.record)
  traj = rec(trajectory.init_trajectory(N, R), _stats(ids=(0, -1, 6, 3)),
             jnp.int32(0))
  np.testing.assert_array_equal(traj["visits"][:, 0], [1, 0, 0, 1, 0, 0])
  assert float(traj["loss"][N - 1, 0]) == 0.0
  for epoch in (-1, R):
    traj = rec(trajectory.init_trajectory(N, R), _stats(), jnp.int32(epoch))
    assert int(traj["visits"].sum()) == 0
  # check_visits then names the ids that were never recorded.
  with pytest.raises(trajectory.VisitError,
                     match=r"never recorded.*outside \[0, N\).*checked\(step\)"):
    trajectory.check_visits(np.asarray(traj["visits"]))


def test_traced_select_mistakes_never_pick_the_bad_rows():
  pick = jax.jit(lambda s, l: selection.select_mask(s, l, 0.5, num_classes=C))
  m = np.asarray(pick(SCORES.at[2].set(jnp.nan), SEL_LABELS))
  assert not m[2]  # NaN ranks last (with -inf), not first
  m = np.asarray(pick(SCORES, SEL_LABELS.at[2].set(7)))
  assert not m[2]  # a label outside [0, C) takes no class's quota


def test_deprecated_candidates_warns_and_matches_the_host_wrapper():
  cand = jnp.array([True, True, False, True, True, True])
  with pytest.warns(DeprecationWarning, match="select_mask_host"):
    m = selection.select_mask(SCORES, SEL_LABELS, 0.5, num_classes=C,
                              candidates=cand, tie_seed=3)
  np.testing.assert_array_equal(m, selection.select_mask_host(
      SCORES, SEL_LABELS, 0.5, num_classes=C, candidates=cand, tie_seed=3))
  assert not m[2]
