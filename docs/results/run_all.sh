#!/usr/bin/env bash
# The exact commands behind docs/results/ (2 CPU cores; the two data sets run
# side by side, about 3 hours in all).
# Data: make data-fashion-mnist && make data-mnist
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/results}
# MRMC's open choices, each changed alone from the earlier defaults (R = 10).
# The references (random, mrmc, mrmc_r at 0.3 and 0.1) come from the R = 10
# grid: the same seeds give bitwise the same warm-up and training there.
ABLATION="mrmc(loss_source=eval),mrmc(skip_epochs=1),mrmc(skip_epochs=3),\
mrmc(score=observed),mrmc(epoch_offset=0),mrmc(max_initial_ratio=1e6),\
mrmc(epochs=5),mrmc(class_balanced=False),mrmc_r(score_scale=max),\
mrmc_r(gamma=5.0)"
# Second round: MRMC-R's rho and gamma, more values of R, and R = 5 with
# the bound lifted.
ABLATION2="mrmc_r(rho=0.1),mrmc_r(rho=0.5),mrmc_r(rho=0.7),mrmc_r(gamma=0.5),\
mrmc_r(gamma=1.0),mrmc(epochs=3),mrmc(epochs=7),\
mrmc(epochs=5;max_initial_ratio=1e6)"
chain() {
  local ds=$1 r10=--config.selection.warmup_epochs=10
  # The comparison at the defaults (R = 5 warm-up epochs).
  $PY experiments/compare.py --config=configs/$ds.py --workdir=$OUT/$ds
  # The same comparison with R = 10 (the earlier default), and the ablations
  # of MRMC's choices, which were run from the 10-epoch warm-up.
  $PY experiments/compare.py --config=configs/$ds.py $r10 \
    --workdir=$OUT/${ds}_r10
  $PY experiments/compare.py --config=configs/$ds.py $r10 \
    --workdir=$OUT/${ds}_ablation --config.compare.ratios=0.3,0.1 \
    "--config.compare.methods=$ABLATION"
  $PY experiments/compare.py --config=configs/$ds.py $r10 \
    --workdir=$OUT/${ds}_ablation2 --config.compare.ratios=0.3,0.1 \
    "--config.compare.methods=$ABLATION2"
}
if [[ -z "${ROUND:-}" ]]; then
  chain fashion_mnist > $OUT-fashion_mnist.log 2>&1 &
  chain mnist > $OUT-mnist.log 2>&1 &
  wait
fi

# --- Seeded ties, DUAL, faithful D2, ratio-aware MRMC: ROUND=issue12 ----
# (about 1.5 hours on 2 shared cores.) Workdirs under runs/.
# 1) mrmc_ra's knobs, chosen on a validation split: 10% of each class of the
# training split held out (dataset.validation_fraction), seeds 0 and 1,
# ratios 0.5/0.3/0.1; the test split is not loaded. Round 1 ran under the
# first defaults (ra_form=beta, ra_cut=0.2, ra_shape=2.0) and was stopped
# after seed 0 (ra_form=top never ran); round 2 was stopped after seed 0 of
# the mix form. Round 1 ran as `mrmc_ra`, `mrmc_ra(ra_shape=1.0)`, ...
# under those defaults; VAL1 spells the knobs out (the same selections) and
# merge_rerun.py names round 1's cells so.
VAL1="random,mrmc,dual,mrmc_ra(ra_form=beta;ra_cut=0.2;ra_shape=2.0),\
mrmc_ra(ra_form=beta;ra_cut=0.2;ra_shape=1.0),\
mrmc_ra(ra_form=beta;ra_cut=0.2;ra_shape=4.0),\
mrmc_ra(ra_form=beta;ra_cut=0.5;ra_shape=2.0),\
mrmc_ra(ra_form=beta;ra_cut=0.0;ra_shape=2.0),\
mrmc_ra(ra_form=uniform;ra_cut=0.2;ra_shape=2.0),\
mrmc_ra(ra_form=top;ra_cut=0.2;ra_shape=2.0)"
VAL2="random,mrmc,dual,mrmc_ra(ra_form=conf;ra_cut=0.0;ra_shape=4.0),\
mrmc_ra(ra_form=conf;ra_cut=0.0;ra_shape=2.0),\
mrmc_ra(ra_form=mix;ra_cut=0.0;ra_shape=4.0),\
mrmc_ra(ra_form=mix;ra_cut=0.0;ra_shape=2.0)"
VAL3="mrmc_ra(ra_form=conf;ra_cut=0.0;ra_shape=8.0)"
VAL4="mrmc_ra(ra_form=conf;ra_cut=0.0;ra_shape=4.0;ra_anchor=0.01),\
mrmc_ra(ra_form=conf;ra_cut=0.0;ra_shape=8.0;ra_anchor=0.01)"
val() {
  local ds=$1 round=$2 methods=$3
  $PY experiments/compare.py --config=configs/$ds.py \
    --workdir=runs/$round/$ds --config.dataset.validation_fraction=0.1 \
    --config.compare.ratios=0.5,0.3,0.1 --config.compare.seeds=0,1 \
    "--config.compare.methods=$methods"
}
# 2) The test split (the defaults: R = 5, seeds 0-2, 0.7/0.5/0.3/0.1) for
# the methods whose core-sets changed (forgetting: ties; d2: fixed; dual:
# new) with random as a bitwise check; mrmc_ra's first choice (run under the
# defaults of that time, c_d 4 and DUAL's 10-example anchor: given here
# explicitly) and its final default; GraNd at 0.1, whose warm-up stores the
# gradient norms for tie_check.py.
final() {
  local ds=$1
  $PY experiments/compare.py --config=configs/$ds.py --workdir=runs/final/$ds \
    "--config.compare.methods=random,forgetting,d2,dual"
  $PY experiments/compare.py --config=configs/$ds.py \
    --workdir=runs/final/${ds}_ra --config.compare.methods=mrmc_ra \
    --config.selection.ra_shape=4.0 --config.selection.ra_anchor=0.0
  $PY experiments/compare.py --config=configs/$ds.py \
    --workdir=runs/final/${ds}_ra2 --config.compare.methods=mrmc_ra
  $PY experiments/compare.py --config=configs/$ds.py \
    --workdir=runs/final/grandcheck_$ds --config.compare.methods=grand \
    --config.compare.ratios=0.1
  PYTHONPATH=. $PY docs/results/tie_check.py ${ds}_idx runs/final/$ds \
    > docs/results/$ds/tie_check.md
  PYTHONPATH=. $PY docs/results/tie_check.py ${ds}_idx \
    runs/final/grandcheck_$ds | grep 'grand\|---\|method' \
    >> docs/results/$ds/tie_check.md
}
if [[ "${ROUND:-}" == issue12 ]]; then
  for ds in fashion_mnist mnist; do
    (val $ds val "$VAL1"; val $ds val2 "$VAL2"; val $ds val3 "$VAL3"
     val $ds val4 "$VAL4"; final $ds) > runs/issue12-$ds.log 2>&1 &
  done
  wait
  PYTHONPATH=. $PY docs/results/merge_rerun.py runs
fi

# --- Peers as their references, mrmc_ra's name: ROUND=issue20 -----------
# (about 40 minutes of 2 shared cores per data set.) 1) The ablation behind
# mrmc_ra's name: MRMC's score permuted within each class, for the rank and
# the anchor together and one at a time, and the no-MRMC control
# (mrmc_ra_ablation.md; the control was added after the others). 2) DUAL and
# D2 rerun on the test grid after their fixes (merged into results.csv).
# 3) The masks against the reference ports (reference_check.md; Fashion-
# MNIST, seed 0, a warm-up that stores the features).
RA_ABL="mrmc_ra(ra_score=shuffled),mrmc_ra,random,\
mrmc_ra(ra_score=shuffled_rank),mrmc_ra(ra_score=shuffled_anchor)"
if [[ "${ROUND:-}" == issue20 ]]; then
  for ds in fashion_mnist mnist; do
    ($PY experiments/compare.py --config=configs/$ds.py \
       --workdir=runs/ra_ablation/$ds --config.compare.ratios=0.3,0.1 \
       --config.compare.seeds=0,1,2 "--config.compare.methods=$RA_ABL"
     $PY experiments/compare.py --config=configs/$ds.py \
       --workdir=runs/ra_none/$ds --config.compare.ratios=0.3,0.1 \
       --config.compare.seeds=0,1,2 "--config.compare.methods=mrmc_ra(ra_score=none)"
     $PY experiments/compare.py --config=configs/$ds.py \
       --workdir=runs/peers_rerun/$ds --config.compare.methods=dual,d2
    ) > runs/issue20-$ds.log 2>&1 &
  done
  wait
  $PY experiments/compare.py --config=configs/fashion_mnist.py \
    --workdir=runs/refcheck/fashion_mnist --config.compare.methods=d2 \
    --config.compare.ratios=0.1 --config.compare.seeds=0
  PYTHONPATH=. $PY docs/results/reference_check.py fashion_mnist_idx \
    runs/refcheck/fashion_mnist 0
  PYTHONPATH=. $PY docs/results/ra_ablation.py runs
  PYTHONPATH=. $PY docs/results/merge_rerun.py runs --issue20
fi

# --- Label noise and cost: ROUND=issue20b ---------------------------------
# Fashion-MNIST with 20% and 40% symmetric label noise (dataset.label_noise,
# the same noisy labels for every seed: dataset.label_noise_seed=0), the two
# levels side by side on 2 shared cores; label_noise.md. Each seed runs
# every method before the next seed starts; full data runs last.
NOISE_METHODS="random,mrmc,mrmc_ra,dual,el2n,ccs,moderate,full"
if [[ "${ROUND:-}" == issue20b ]]; then
  for f in 0.2 0.4; do
    nice -n 5 $PY experiments/compare.py --config=configs/fashion_mnist.py \
      --workdir=runs/noise_$f/fashion_mnist --config.dataset.label_noise=$f \
      --config.compare.ratios=0.5,0.3,0.1 --config.compare.seeds=0,1,2 \
      "--config.compare.methods=$NOISE_METHODS" > runs/issue20b-$f.log 2>&1 &
  done
  wait
  # This round was stopped during seed 2; the reports use seeds 0-1.
  for f in 0.2 0.4; do
    PYTHONPATH=. $PY docs/results/noise_reports.py runs/noise_$f/fashion_mnist       0,1 docs/results/fashion_mnist/noise_$f
    PYTHONPATH=. $PY docs/results/noise_signals.py runs/noise_$f/fashion_mnist 0
  done
  PYTHONPATH=. $PY docs/results/label_noise.py 0,1     runs/noise_0.2/fashion_mnist/results.csv runs/noise_0.4/fashion_mnist/results.csv
fi
# The proxy warm-up (selection.warmup_model=mlp_small, one hidden layer of
# 128 against the configured 512-256 MLP) against the same-model warm-up,
# one after the other under the same load: seed 0, mrmc_ra and dual at 0.1
# (superseded by ROUND=issue20c_proxy below).
if [[ "${ROUND:-}" == issue20b_proxy ]]; then
  for wm in mlp_small ""; do
    nice -n 10 $PY experiments/compare.py --config=configs/fashion_mnist.py \
      --workdir=runs/proxy_${wm:-same}/fashion_mnist \
      "--config.selection.warmup_model=$wm" --config.compare.ratios=0.1 \
      --config.compare.seeds=0 --config.compare.methods=mrmc_ra,dual
  done > runs/issue20b-proxy.log 2>&1
fi

# --- Seed 2 of the noise grids; MRMC's fit filter: ROUND=issue20c -------
# (about 45 minutes of 2 shared cores.) 1) Seed 2 of the issue20b grids in
# workdirs of their own (seeds 0-1 are in docs/results' results.csv).
# 2) fit_filter chosen on a noisy validation split (10% of each class,
# carrying the same noise rate; seeds 0-1; the test split not loaded):
# round 1 (the filter at 1.0 in four forms, the unfiltered score form),
# round 2 (the threshold), and the same at 40% noise as a check.
# 3) The test grid: mrmc(fit_filter=0.75), the control without MRMC's
# score (the filter, then uniform sampling) and Random (bitwise the cells
# of the issue20b grid: a check).
VAL_R1="random,dual,mrmc_ra,mrmc_ra(fit_filter=1.0),\
mrmc_ra(fit_filter=1.0;ra_form=score),mrmc(fit_filter=1.0),\
mrmc_ra(fit_filter=1.0;ra_form=uniform),mrmc_ra(ra_form=score)"
VAL_R2="mrmc(fit_filter=0.5),mrmc(fit_filter=0.75),mrmc(fit_filter=1.5),\
mrmc(fit_filter=2.0)"
VAL_40="random,dual,mrmc_ra,mrmc(fit_filter=0.5),mrmc(fit_filter=0.75),\
mrmc(fit_filter=1.0)"
FF="random,mrmc(fit_filter=0.75),mrmc_ra(fit_filter=0.75;ra_form=uniform)"
noisy() {
  local f=$1 workdir=$2; shift 2
  nice -n 5 $PY experiments/compare.py --config=configs/fashion_mnist.py \
    --workdir=$workdir --config.dataset.label_noise=$f \
    --config.compare.ratios=0.5,0.3,0.1 "$@"
}
if [[ "${ROUND:-}" == issue20c ]]; then
  for f in 0.2 0.4; do
    noisy $f runs/noise_${f}_s2/fashion_mnist --config.compare.seeds=2 \
      "--config.compare.methods=$NOISE_METHODS" > runs/issue20c-$f.log 2>&1 &
  done
  wait
  for methods in "$VAL_R1" "$VAL_R2"; do
    noisy 0.2 runs/noise_val/fashion_mnist \
      --config.dataset.validation_fraction=0.1 --config.compare.seeds=0,1 \
      "--config.compare.methods=$methods"
  done > runs/noise_val.log 2>&1
  noisy 0.4 runs/noise_val40/fashion_mnist \
    --config.dataset.validation_fraction=0.1 --config.compare.seeds=0,1 \
    "--config.compare.methods=$VAL_40" > runs/noise_val40.log 2>&1 &
  for f in 0.2 0.4; do
    noisy $f runs/noise_ff_$f/fashion_mnist --config.compare.seeds=0,1,2 \
      "--config.compare.methods=$FF" > runs/noise_ff_$f.log 2>&1 &
  done
  wait
  for f in 0.2 0.4; do
    out=docs/results/fashion_mnist/noise_$f
    PYTHONPATH=. $PY docs/results/noise_reports.py \
      runs/noise_ff_$f/fashion_mnist,runs/noise_${f}_s2/fashion_mnist \
      0,1,2 $out $out/results.csv
    PYTHONPATH=. $PY docs/results/noise_signals.py \
      runs/noise_${f}_s2/fashion_mnist 2
  done
  PYTHONPATH=. $PY docs/results/noise_reports.py runs/noise_val/fashion_mnist \
    0,1 runs/noise_val_report --all
  PYTHONPATH=. $PY docs/results/noise_reports.py \
    runs/noise_val40/fashion_mnist 0,1 runs/noise_val40_report --all
  cp runs/noise_val_report/results.csv \
    docs/results/fashion_mnist/noise_0.2/validation.csv
  cp runs/noise_val40_report/results.csv \
    docs/results/fashion_mnist/noise_0.4/validation.csv
  PYTHONPATH=. $PY docs/results/label_noise.py 0,1,2 \
    docs/results/fashion_mnist/noise_0.2/results.csv \
    docs/results/fashion_mnist/noise_0.4/results.csv
  PYTHONPATH=. $PY docs/results/label_noise.py 0,1 \
    docs/results/fashion_mnist/noise_0.2/validation.csv \
    docs/results/fashion_mnist/noise_0.4/validation.csv
fi
# The proxy warm-up on both sets, seeds 0-2, ratios 0.3 and 0.1: for each
# set the proxy and the configured model's grids side by side (the same
# load); warmup_proxy.md.
if [[ "${ROUND:-}" == issue20c_proxy ]]; then
  for ds in mnist fashion_mnist; do
    for wm in mlp_small ""; do
      nice -n 5 $PY experiments/compare.py --config=configs/$ds.py \
        --workdir=runs/proxy3_${wm:-same}/$ds \
        "--config.selection.warmup_model=$wm" \
        --config.compare.ratios=0.3,0.1 --config.compare.seeds=0,1,2 \
        --config.compare.methods=mrmc_ra,dual \
        > runs/proxy3-$ds-${wm:-same}.log 2>&1 &
    done
    wait
    PYTHONPATH=. $PY docs/results/proxy_table.py $ds \
      runs/proxy3_mlp_small/$ds/results.csv runs/proxy3_same/$ds/results.csv
  done
fi

# --- Boundary (Yang et al., ICML 2024): ROUND=issue27_boundary ------------
# The test grid (the defaults: R = 5, seeds 0-2, 0.7/0.5/0.3/0.1) for
# `boundary`, the two sets side by side; then Random's seed-0 cells in the
# same workdir, a bitwise check of the table's (results.csv lists the last
# grid's cells: kept as random_check.csv, and the full grid rerun, which
# redoes no cell, writes results.csv again); merged into results.csv.
if [[ "${ROUND:-}" == issue27_boundary ]]; then
  for ds in fashion_mnist mnist; do
    (grid() {
       $PY experiments/compare.py --config=configs/$ds.py \
         --workdir=runs/boundary/$ds "$@"
     }
     grid --config.compare.methods=boundary
     grid --config.compare.methods=boundary,random --config.compare.seeds=0
     cp runs/boundary/$ds/results.csv runs/boundary/$ds/random_check.csv
     grid --config.compare.methods=boundary
    ) > runs/issue27-boundary-$ds.log 2>&1 &
  done
  wait
  PYTHONPATH=. $PY docs/results/merge_rerun.py runs --boundary
fi

# --- Class-conditional label noise: ROUND=issue27cc ----------------------
# Fashion-MNIST, look-alike pairs flipped both ways (T-shirt/top-Shirt,
# Pullover-Coat, Sneaker-Ankle boot: dataset.label_noise_kind=
# pairs:fashion_mnist), 30% of each such class (dataset.label_noise=0.3,
# the same noisy labels for every seed); class_conditional_noise.md.
# 1) aum_filter chosen on a noisy validation split (10% of each class,
# carrying the same noise; seed 0, then seed 1 as a check, stopped after
# random, -0.5, 0.0 and -1.0; the test split not loaded; aum_filter=1.0 was
# stopped after one cell and replaced by -1.0). 2) The test
# grid (seeds 0-2, ratios 0.7/0.5/0.3/0.1), one workdir per seed, run side
# by side.
CC_VAL="random,mrmc(aum_filter=0.0),mrmc,mrmc(aum_filter=0.5),\
mrmc(aum_filter=-0.5),mrmc(aum_filter=-1.0),dual"
CC_TEST="random,mrmc,mrmc(aum_filter=-0.5),mrmc_ra(aum_filter=-0.5;ra_form=uniform),dual"
cc() {
  local workdir=$1; shift
  nice -n 5 $PY experiments/compare.py --config=configs/fashion_mnist.py \
    --workdir=$workdir --config.dataset.label_noise=0.3 \
    --config.dataset.label_noise_kind=pairs:fashion_mnist "$@"
}
if [[ "${ROUND:-}" == issue27cc ]]; then
  cc runs/cc_val/fashion_mnist --config.dataset.validation_fraction=0.1 \
    --config.compare.ratios=0.5,0.3,0.1 --config.compare.seeds=0,1 \
    "--config.compare.methods=$CC_VAL" > runs/cc_val.log 2>&1
  for s in 0 1 2; do
    cc runs/cc_test$([[ $s == 0 ]] || echo _s$s)/fashion_mnist --config.compare.ratios=0.7,0.5,0.3,0.1 \
      --config.compare.seeds=$s "--config.compare.methods=$CC_TEST" \
      > runs/cc_test_s$s.log 2>&1 &
  done
  wait
  PYTHONPATH=. $PY docs/results/cc_noise.py runs/cc_val/fashion_mnist 0 \
    "mrmc(aum_filter=-0.5)" "-"
  PYTHONPATH=. $PY docs/results/cc_noise.py \
    runs/cc_test/fashion_mnist,runs/cc_test_s1/fashion_mnist,runs/cc_test_s2/fashion_mnist \
    0,1,2 "mrmc(aum_filter=-0.5)" "mrmc_ra(aum_filter=-0.5;ra_form=uniform)" \
    docs/results/fashion_mnist/cc_noise_0.3
  # 3) The chosen setting on the clean grid (the other rows: the committed
  # fashion_mnist/results.csv); the three results.csv concatenated into
  # fashion_mnist/aum_filter_clean.csv.
  for s in 0 1 2; do
    $PY experiments/compare.py --config=configs/fashion_mnist.py \
      --workdir=runs/clean_aum_s$s/fashion_mnist \
      --config.compare.ratios=0.7,0.5,0.3,0.1 --config.compare.seeds=$s \
      "--config.compare.methods=mrmc(aum_filter=-0.5)" \
      > runs/clean_aum_s$s.log 2>&1 &
  done
  wait
  # 4) The same under label_noise.md's 20% symmetric noise (ratios 0.5-0.1;
  # concatenated into fashion_mnist/noise_0.2/aum_filter.csv).
  for s in 0 1 2; do
    $PY experiments/compare.py --config=configs/fashion_mnist.py \
      --workdir=runs/sym_aum_s$s/fashion_mnist --config.dataset.label_noise=0.2 \
      --config.compare.ratios=0.5,0.3,0.1 --config.compare.seeds=$s \
      "--config.compare.methods=mrmc(aum_filter=-0.5)" \
      > runs/sym_aum_s$s.log 2>&1 &
  done
  wait
fi

# --- Every peer at its new default, the new baselines, MNIST's look-alike
# noise: ROUND=issue27b (2 shared cores; two workers take the jobs below in
# order, about 2.5 hours for all of them; the tables' seeds 1 and 2 did not
# fit the session) -----------------------------------------------------------
# The tables: the peers at their authors' selection (CHANGELOG 0.3.0), the
# baselines added in 0.3.0, and Random again as a check that the earlier
# rows reproduce; one workdir per data set and seed (on MNIST the new
# baselines, `table27n`, and the peers, `table27p`, apart).
# MNIST with look-alike pairs flipped (1-7, 3-8, 4-9, 5-6; 30% of each such
# class): the methods and setting of Fashion-MNIST's test grid
# (aum_filter=-0.5, chosen there, not on MNIST), then that setting on clean
# MNIST.
NEW="aum,tdds,least_confidence,margin,entropy,kcenter,herding"
PEERS="random,el2n,grand,forgetting,ccs,moderate,dyn_unc,d2,dual"
job27() {
  local what=$1 s=$2 ds=mnist flags=() methods workdir
  case $what in
    ccmnist) workdir=runs/cc_test_s$s/mnist; methods=$CC_TEST
      flags=(--config.dataset.label_noise=0.3
             --config.dataset.label_noise_kind=pairs:mnist) ;;
    cleanmnist) workdir=runs/clean_aum_s$s/mnist
      methods="mrmc(aum_filter=-0.5)" ;;
    newmnist) workdir=runs/table27n_s$s/mnist; methods=$NEW ;;
    peersmnist) workdir=runs/table27p_s$s/mnist; methods=$PEERS ;;
    fmnist) ds=fashion_mnist; workdir=runs/table27_s$s/fashion_mnist
      methods="$PEERS,$NEW" ;;
  esac
  nice -n 5 $PY experiments/compare.py --config=configs/$ds.py \
    --workdir=$workdir "${flags[@]}" --config.compare.ratios=0.7,0.5,0.3,0.1 \
    --config.compare.seeds=$s "--config.compare.methods=$methods" \
    > $workdir.log 2>&1
}
if [[ "${ROUND:-}" == issue27b ]]; then
  JOBS=("fmnist 0" "ccmnist 0" "cleanmnist 0" "ccmnist 1" "ccmnist 2"
        "newmnist 0" "cleanmnist 1" "cleanmnist 2" "peersmnist 0" "fmnist 1"
        "fmnist 2" "newmnist 1" "peersmnist 1" "newmnist 2" "peersmnist 2")
  printf '%s\n' "${JOBS[@]}" > runs/issue27b.jobs
  worker() {
    local job
    while job=$(flock runs/issue27b.jobs.lock bash -c \
                'head -1 runs/issue27b.jobs; sed -i 1d runs/issue27b.jobs') \
          && [[ -n "$job" ]]; do
      job27 $job
    done
  }
  worker & worker & wait
  PYTHONPATH=. $PY docs/results/cc_noise.py \
    runs/cc_test_s0/mnist,runs/cc_test_s1/mnist,runs/cc_test_s2/mnist 0,1,2 \
    "mrmc(aum_filter=-0.5)" "mrmc_ra(aum_filter=-0.5;ra_form=uniform)" \
    docs/results/mnist/cc_noise_0.3
  PYTHONPATH=. $PY docs/results/merge_rerun.py runs --issue27
fi
