"""Every config file loads and passes validation; presets and overrides."""

import copy
import importlib
import os
import runpy

import pytest

from mrmc_jax.configs import base
from mrmc_jax.configs import default
from mrmc_jax.methods import options
from mrmc_jax.methods import registry
from mrmc_jax.runner import config as config_lib
from mrmc_jax.runner import fields
from mrmc_jax.runner import stages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "mrmc_jax", "configs")
NAMES = sorted(f[:-3] for f in os.listdir(PACKAGE)
               if f.endswith(".py") and f not in ("__init__.py", "base.py"))


@pytest.mark.parametrize("name", NAMES)
def test_config_validates(name):
  config = importlib.import_module(f"mrmc_jax.configs.{name}").get_config()
  config_lib.validate_config(config)


def test_every_package_config_has_its_thin_file_and_no_other():
  thin = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "configs"))
                if f.endswith(".py"))
  assert thin == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_thin_file_loads_as_the_flag_loads_it(name):
  # By path, as `--config=configs/<name>.py:arg` loads it.
  loaded = runpy.run_path(os.path.join(ROOT, "configs", f"{name}.py"))
  arg = "dataset.name='digits'" if name == "attribution" else "seed=3"
  want = importlib.import_module(f"mrmc_jax.configs.{name}").get_config(arg)
  assert loaded["get_config"](arg).to_dict() == want.to_dict()


def test_paper_preset_and_overrides():
  from mrmc_jax.configs import cifar10  # pylint: disable=g-import-not-at-top
  config = cifar10.get_config("paper,selection.ratio=0.1,train.epochs=3")
  assert not config.selection.class_balanced
  assert config.selection.max_initial_ratio == 1e30
  assert config.selection.ratio == 0.1 and config.train.epochs == 3
  quick = cifar10.get_config("quick")
  assert quick.train.epochs == 5 and quick.selection.warmup_epochs == 2
  assert base.presets("quick,a.b=1,paper") == {"quick", "paper"}


@pytest.mark.parametrize("name", NAMES)
def test_every_field_states_what_it_affects(name):
  config = importlib.import_module(f"mrmc_jax.configs.{name}").get_config()
  declared = fields.declared()
  for path, _ in fields.leaves(config):
    assert path in declared, f"{path} has no declaration in fields.py"
    assert set(declared[path].affects) <= set(fields.STAGES), path


def test_a_field_without_a_mark_is_refused():
  config = default.get_config()
  config.train.nosuch = 3
  with pytest.raises(ValueError, match=r"^unknown field train.nosuch"):
    config_lib.validate_config(config)
  config = default.get_config()
  config.train.learning_rat = 0.1
  with pytest.raises(ValueError, match=r"did you mean train.learning_rate"):
    config_lib.validate_config(config)


def _stamps(**overrides):
  config = base.set_fields(default.get_config(), overrides)
  opts = config_lib.selection_options(config)
  warm = stages.warmup_stamp(config, config.seed, {"data": 1})
  sel = stages.selection_stamp(warm, config, "mrmc", 0.3, opts)
  return warm, sel, stages.result_stamp(sel, config)


def test_stage_stamps_follow_the_marks():
  ref = _stamps()
  assert _stamps(**{"train.checkpoint_every_epochs": 5}) == ref
  assert _stamps(**{"selection.method": "random"}) == ref  # Explicit input.
  budget = _stamps(**{"train.budget": "steps"})
  assert budget[:2] == ref[:2] and budget[2] != ref[2]
  rho = _stamps(**{"selection.mrmc_r.rho": 0.5})
  assert rho[0] == ref[0] and rho[1] != ref[1]
  epochs = _stamps(**{"train.epochs": 7})
  assert all(a != b for a, b in zip(epochs, ref))


def test_readme_option_table_is_the_declarations():
  readme = open(os.path.join(ROOT, "README.md")).read()
  begin = "<!-- method options: begin -->\n"
  end = "<!-- method options: end -->"
  got = readme[readme.index(begin) + len(begin):readme.index(end)]
  want = "\n".join(options.table_rows(
      registry.option_readers(builtin_only=True))) + "\n"
  assert got == want, "README.md's option table should read:\n" + want


# The fields added with an `absent` value (since fields.py's rule).
ADDED = ("selection.fit_filter", "selection.aum_filter",
         "dataset.label_noise_kind",
         "selection.aum.margin", "selection.least_confidence.on",
         "selection.herding.pick", "selection.boundary.mode")


def _without(config, paths):
  """The config as a version without the fields `paths` built it."""
  config = copy.deepcopy(config)
  config.unlock()
  for path in paths:
    *parents, leaf = path.split(".")
    node = config
    for p in parents:
      node = node[p]
    del node[leaf]
    if parents and not node:  # A scope with no other option: none.
      del fields.get(config, ".".join(parents[:-1]))[parents[-1]]
  return config


def test_fields_added_at_their_absent_value_change_no_stamp_or_identity():
  declared = fields.declared()
  assert all(declared[p].absent is not options.NOT_SET for p in ADDED)
  config = default.get_config()
  old = _without(config, ADDED)
  # The stamps and the identity of a version without the fields.
  data = {"data": 1}
  warm = stages.warmup_stamp(config, 0, data)
  assert warm == stages.warmup_stamp(old, 0, data)
  assert (fields.affecting(config, fields.S) ==
          fields.affecting(old, fields.S))
  assert config_lib.run_identity(config) == config_lib.run_identity(old)
  # Any other value is part of both.
  for path, value in [("dataset.label_noise", 0.2),
                      ("selection.fit_filter", 0.75),
                      ("dataset.label_noise_kind", "pairs:mnist")]:
    other = copy.deepcopy(config)
    *parents, leaf = path.split(".")
    node = other
    for p in parents:
      node = node[p]
    setattr(node, leaf, value)
    assert config_lib.run_identity(other) != config_lib.run_identity(config)
  noisy = default.get_config()
  noisy.dataset.label_noise = 0.2
  assert stages.warmup_stamp(noisy, 0, data) != warm
  opts = config_lib.selection_options(config)
  sel = stages.selection_stamp(warm, config, "mrmc", 0.3, opts)
  off = config_lib.selection_options(
      base.set_fields(default.get_config(), {"selection.fit_filter": 0.75}))
  assert sel != stages.selection_stamp(warm, config, "mrmc", 0.3, off)
  fit_filter = options.declared()["fit_filter"]
  assert fit_filter.omitted(0.0) and fit_filter.omitted(0)
  assert not fit_filter.omitted(0.75) and not fit_filter.omitted(False)


def test_a_workdir_written_before_a_field_resumes(tmp_path):
  from mrmc_jax.runner import workdir as wd  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  identity = config_lib.run_identity(config)
  for stored in (config_lib.run_identity(_without(config, ADDED)),
                 # An earlier build that stored the field at that value.
                 {**identity, "selection": {**identity["selection"],
                                            "fit_filter": 0.0}}):
    workdir = str(tmp_path / f"w{len(os.listdir(tmp_path))}")
    os.makedirs(workdir)
    wd.write_json(os.path.join(workdir, "config.json"), stored)
    wd.check_workdir(workdir, "main", identity)  # Accepted.
  stored = {**identity, "selection": {**identity["selection"],
                                      "fit_filter": 0.5}}
  workdir = str(tmp_path / "changed")
  os.makedirs(workdir)
  wd.write_json(os.path.join(workdir, "config.json"), stored)
  with pytest.raises(wd.ConfigMismatchError, match="selection.fit_filter: "
                     "stored 0.5, given '<missing>'"):
    wd.check_workdir(workdir, "main", identity)


# The identities and stamps the 0.2 line wrote, before the method options
# were scoped: recorded with that code from configs/default.py (plain and
# `paper`; "flat": selection.d2_k=3, selection.rho=0.5, selection.ra_form=
# 'beta'), with warm-up stamp "w" and selection stamp "s" given.
_OLD = os.path.join(ROOT, "tests", "data", "identity_0_2.json")


def _old():
  import json  # pylint: disable=g-import-not-at-top
  with open(_OLD) as f:
    return json.load(f)


# The fields by which 0.3.0's peer defaults (their authors' selection,
# issue 27) differ from 0.2's: options added at a default that is not their
# `absent` value, and changed defaults. They are in every identity, so a
# 0.2 workdir is refused (CHANGELOG 0.3.0), never resumed with other results.
_PEER_DEFAULTS_0_3 = {
    "selection.aum.per_class", "selection.ccs.difficulty",
    "selection.ccs.drop", "selection.ccs.per_class", "selection.d2.cut",
    "selection.d2.split", "selection.dual.per_class",
    "selection.dyn_unc.per_class", "selection.el2n.last_epochs",
    "selection.el2n.per_class", "selection.forgetting.per_class",
    "selection.grand.per_class", "selection.moderate.per_class",
    "selection.tdds.per_class"}


def _leaves(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_leaves(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out


@pytest.mark.parametrize("arg", [None, "paper"])
def test_scoped_identity_of_0_2_differs_only_by_the_0_3_peer_defaults(arg):
  old = _old()["paper" if arg else "default"]
  config = default.get_config(arg)
  config_lib.validate_config(config)
  # Without the peers' new fields (and with 0.2's defaults where one
  # changed), the fields each stage depends on and the result stamp are
  # 0.2's.
  as_0_2 = _without(base.set_fields(
      copy.deepcopy(config), {"selection.ccs.difficulty": "forgetting",
                              "selection.el2n.last_epochs": None}),
                    _PEER_DEFAULTS_0_3 - {"selection.ccs.difficulty",
                                          "selection.el2n.last_epochs"})
  assert stages.result_stamp("s", as_0_2) == old["result"]
  assert {s: fields.affecting(as_0_2, s) for s in fields.STAGES} == (
      old["affects"])
  # The stored flat identity reads as the scoped one: the scoping renamed
  # fields; only the peers' new defaults differ.
  assert "d2_k" in old["config.json"]["selection"]
  assert config_lib.run_identity(config)["selection"]["d2"]["k"] == 5
  for name, now in (("config.json", config_lib.run_identity(config)),
                    ("grid.json", config_lib.grid_identity(config))):
    was = _leaves(fields.drop_absent(fields.upgrade_identity(old[name])))
    now = _leaves(fields.drop_absent(now))
    assert {k for k in set(was) | set(now)
            if was.get(k) != now.get(k)} == _PEER_DEFAULTS_0_3, name


def test_a_workdir_written_with_flat_option_fields_resumes(tmp_path):
  from mrmc_jax.runner import workdir as wd  # pylint: disable=g-import-not-at-top
  old = _old()
  for name, arg, stored in (
      ("default", None, old["default"]["config.json"]),
      ("paper", "paper", old["paper"]["config.json"]),
      ("flat", "selection.d2.k=3,selection.mrmc_r.rho=0.5,"
       "selection.mrmc_ra.form='beta'", old["flat"]["config.json"])):
    config = default.get_config(arg)
    config_lib.validate_config(config)
    identity = config_lib.run_identity(config)
    # As 0.2 wrote it: refused, naming a field of the peers' new defaults.
    workdir = str(tmp_path / f"{name}_0_2")
    os.makedirs(workdir)
    wd.write_json(os.path.join(workdir, "config.json"), stored)
    with pytest.raises(wd.ConfigMismatchError, match=r"selection\.(aum|ccs|"
                       r"d2|dual|dyn_unc|el2n|forgetting|grand|moderate|"
                       r"tdds)"):
      wd.check_workdir(workdir, "main", identity)
    # Flat option fields with those fields as 0.3.0 writes them: resumed.
    flat = {**stored, "selection": {**stored["selection"]}}
    scoped = identity["selection"]
    for field in _PEER_DEFAULTS_0_3:
      scope, option = field.split(".")[1:]
      flat["selection"].pop({"ccs.difficulty": "ccs_score",
                             "el2n.last_epochs": "el2n_epochs"}.get(
                                 f"{scope}.{option}", ""), None)
      flat["selection"].setdefault(scope, {})[option] = (
          scoped[scope][option])
    workdir = str(tmp_path / name)
    os.makedirs(workdir)
    wd.write_json(os.path.join(workdir, "config.json"), flat)
    assert wd.claim(workdir, identity)  # Resumed.
    # The stored file is kept as written.
    assert wd.read_json(os.path.join(workdir, "config.json")) == flat
  # Another value of a scoped option is another run, named by its field.
  config = default.get_config("selection.d2.k=4")
  with pytest.raises(wd.ConfigMismatchError,
                     match=r"selection.d2.k: stored 3, given 4\); use a new "
                     r"--workdir, or --config.selection.d2.k=3 to resume"):
    wd.check_workdir(str(tmp_path / "flat"), "main",
                     config_lib.run_identity(config))


def test_flat_option_fields_still_work_with_a_deprecation_warning():
  config = default.get_config("selection.d2_k=3,selection.rho=0.5,"
                              "selection.ra_form='beta'")
  with pytest.warns(DeprecationWarning) as record:
    config_lib.validate_config(config)
  assert sorted(str(w.message) for w in record) == [
      f"selection.{old} is deprecated: write selection.{new} (the flat "
      "spelling is removed in 0.4.0)." for old, new in (
          ("d2_k", "d2.k"), ("ra_form", "mrmc_ra.form"),
          ("rho", "mrmc_r.rho"))]
  assert config.selection.d2.k == 3 and config.selection.d2_k is None
  assert config.selection.mrmc_r.rho == 0.5
  assert config.selection.mrmc_ra.form == "beta"
  scoped = default.get_config("selection.d2.k=3,selection.mrmc_r.rho=0.5,"
                              "selection.mrmc_ra.form='beta'")
  config_lib.validate_config(scoped)
  assert config_lib.run_identity(config) == config_lib.run_identity(scoped)
  # The stamps name each option by its flat key: the spelling changes none.
  opts = config_lib.selection_options(config)
  scoped_opts = config_lib.selection_options(scoped)
  assert opts == scoped_opts
  assert {spec: stages.selection_stamp("w", config, spec, 0.3, opts)
          for spec in ("d2", "mrmc_r", "mrmc_ra")} == {
              spec: stages.selection_stamp("w", scoped, spec, 0.3,
                                           scoped_opts)
              for spec in ("d2", "mrmc_r", "mrmc_ra")}
  # Both spellings, two values: one line, nothing guessed.
  both = default.get_config("selection.d2.k=4,selection.d2_k=3")
  with pytest.raises(ValueError, match=r"^selection.d2_k=3 and "
                     r"selection.d2.k=4 are both set"):
    config_lib.validate_config(both)


def test_an_unknown_scoped_option_names_the_allowed_ones():
  with pytest.raises(ValueError, match=r"unknown field 'selection.d2.kk' "
                     r"\(did you mean 'selection.d2.k'\?\)"):
    default.get_config("selection.d2.kk=3")
  config = default.get_config()
  with pytest.raises(ValueError, match=r"^option 'kk=3' in method spec "
                     r"'d2\(kk=3\)' is not allowed: use key=value with a "
                     r"key from k, gamma, gamma_reverse, difficulty,"):
    config_lib.check_spec("d2(kk=3)", config_lib.selection_options(config),
                          config.selection.warmup_epochs)


def _flags(argv):
  """Parses `--config=...` flags as the entry points do."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  argv = ["prog", f"--config={os.path.join(ROOT, 'configs', 'default.py')}",
          *argv]
  values = flags.FlagValues()
  # The overrides are read from `sys_argv` (the entry points': sys.argv).
  config_flags.DEFINE_config_file("config", None, "config",
                                  flag_values=values, lock_config=True,
                                  sys_argv=argv)
  values(argv)
  return values.config


def test_scoped_options_are_flags():
  config = _flags(["--config.selection.d2.k=7",
                   "--config.selection.mrmc_r.rho=0.25"])
  config_lib.validate_config(config)
  opts = config_lib.selection_options(config)
  assert (opts.d2.k, opts.d2_k, opts.mrmc_r.rho) == (7, 7, 0.25)
  # The flat flag still works, with the warning.
  config = _flags(["--config.selection.d2_k=6"])
  with pytest.warns(DeprecationWarning, match="write selection.d2.k"):
    config_lib.validate_config(config)
  assert config_lib.selection_options(config).d2_k == 6


def test_a_new_method_with_one_knob_is_one_row_and_a_flag(monkeypatch):
  """A package method: its module (knob, select, row) and one registry
  line; its knob is then a config field, a flag and a spec argument."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from mrmc_jax.methods import common  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(options, "_DECLARED", dict(options._DECLARED))
  # --- the new module ---
  knob = common.declare(common.Option(
      "power", float, 1.0, "toy_pkg: exponent of the mean loss", low=0.0,
      low_open=True), scope="toy_pkg")

  def select(art, labels, ratio, *, num_classes, opts, cache):
    del cache  # Unused.
    loss = common.trajectory_view(art, opts)["loss"]
    return common.select_top(np.mean(loss, 1) ** opts.toy_pkg.power, labels,
                             ratio, num_classes=num_classes,
                             class_balanced=opts.class_balanced,
                             seed=opts.seed)

  row = common.Method("toy_pkg", frozenset({"trajectory"}),
                      common.COMMON + knob + common.TRAJECTORY_OPTIONS,
                      select, "mean loss to a power")
  # --- the one registry line (`registry._BUILTIN`), as imported ---
  builtin = registry._BUILTIN + (row,)
  monkeypatch.setattr(registry, "_BUILTIN", builtin)
  monkeypatch.setattr(registry, "_BY_NAME", {m.name: m for m in builtin})
  monkeypatch.setattr(registry, "METHODS", builtin)

  assert row.options == ("class_balanced", "seed", "toy_pkg.power",
                         "loss_source", "epochs")
  config = _flags(["--config.selection.toy_pkg.power=3.0",
                   "--config.selection.method=toy_pkg"])
  config_lib.validate_config(config)
  config_lib.check_main(config)
  opts = config_lib.selection_options(config)
  assert opts.toy_pkg.power == 3.0
  assert registry.resolve("toy_pkg(power=2)", opts)[1].toy_pkg.power == 2
  with pytest.raises(ValueError, match=r"^selection.toy_pkg.power=-1.0 is "
                     r"not allowed: it must be a finite number > 0\.$"):
    config_lib.validate_config(_flags(["--config.selection.toy_pkg.power=-1"]))
  rng = np.random.default_rng(0)
  art = {k: rng.random((40, 3)).astype(np.float32)
         for k in ("loss", "correct", "p_true", "el2n")}
  art["visits"] = np.ones((40, 3), np.int32)
  labels = np.repeat(np.arange(4), 10)
  _, mask = registry.select("toy_pkg(power=2)", art, labels, 0.5,
                            num_classes=4, opts=opts)
  assert mask.sum() == 20


def test_the_command_line_shows_the_deprecation(tmp_path):
  # Python hides a library's DeprecationWarning; the entry points show it.
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  got = subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "main.py"),
       "--config=" + os.path.join(ROOT, "configs", "default.py"),
       f"--workdir={tmp_path / 'w'}", "--config.selection.d2_k=0"],
      capture_output=True, text=True, timeout=300, cwd=ROOT,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False)
  assert got.returncode == 2, got.stderr
  assert ("DeprecationWarning: selection.d2_k is deprecated: write "
          "selection.d2.k" in got.stderr)
  assert got.stderr.strip().endswith(
      "error: selection.d2.k=0 is not allowed: it must be an int >= 1.")
  assert not os.path.exists(tmp_path / "w")
