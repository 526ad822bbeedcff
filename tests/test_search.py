"""The three-stage capacity search: budgets, resumption, shared storage, bad input."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from capq_lib.core.validate import ConfigError
from capq_lib.experiments.search import FCDNNCapacityStudy, open_study, run_worker, study_trials
from capq_lib.experiments.storage import Storage

from .conftest import ROOT

TINY = dict(widths=[10], depths=[1], epochs=15, population=4, stage1_n_per_param=[0.5, 1, 2],
            stage2_lrs=[0.1, 0.3], stage2_momenta=[0.9], stage2_n_factors=[1.0],
            stage3_trials=3, bracket_trials=0, replicates=2, profile="test")
BUDGET = 3 + 2 + 3 + 2  # stage 1 grid + stage 2 grid + stage 3 trials + replicates


def complete_trials(url, study):
    store = Storage(url)
    out = []
    for s in optuna.get_all_study_summaries(store.optuna):
        for t in optuna.load_study(study_name=s.study_name, storage=store.optuna).get_trials():
            if "seeded_from" not in t.user_attrs:
                out.append((s.study_name, t.number, t.state, t.user_attrs.get("plan"),
                            t.value))
    return out


def check_budget(trials):
    done = [t for t in trials if t[2] == TrialState.COMPLETE]
    assert len(done) == BUDGET
    plans = [t[3] for t in done if t[3] is not None]
    assert len(plans) == 7 and len(set(plans)) == 7  # every planned trial exactly once
    assert Counter(t[0].endswith("/stage3") for t in done)[True] == 3
    return done


def test_search_meets_its_budget_and_a_rerun_trains_nothing(tmp_path):
    url = f"journal:///{tmp_path}/s.journal"
    study = FCDNNCapacityStudy(**TINY)
    first = run_worker(study, "cpu", url, progress=False)
    assert first.trials_run == BUDGET
    check_budget(complete_trials(url, study))
    assert run_worker(study, "cpu", url, progress=False).trials_run == 0
    trials = study_trials(study, url)
    assert sorted(Counter(trials.stage).items()) == [(1, 3), (2, 2), (3, 3), (5, 2)]
    s3 = trials[trials.stage == 3]
    assert s3.n_samples.between(1, 2**10 - 1).all() and (s3.lr > 0).all()


def test_a_study_made_for_another_architecture_is_refused(tmp_path):
    store = Storage(f"journal:///{tmp_path}/s.journal")
    open_study(store, "fcdnn-capacity/test/1x10/x", {"profile": "test", "depth": 1})
    with pytest.raises(ConfigError, match=r"created with depth=1, not depth=2"):
        open_study(store, "fcdnn-capacity/test/1x10/x", {"profile": "test", "depth": 2})
    with pytest.raises(ConfigError, match=r"created with profile='test', not profile='quick'"):
        open_study(store, "fcdnn-capacity/test/1x10/x", {"profile": "quick", "depth": 1})


@pytest.mark.parametrize("url,match", [
    ("nonsense:/x", "storage must be a SQLAlchemy URL"),
    ("redis://localhost/0", "storage must be a SQLAlchemy URL of one of"),
    ("postgresql://nobody@127.0.0.1:1/none", "is unreachable"),
])
def test_bad_storage_urls_name_the_parameter(url, match):
    with pytest.raises(ConfigError, match=match):
        Storage(url)


def worker(tmp_path, url, *extra):
    profile = tmp_path / "tiny.yaml"
    if not profile.exists():
        params = {k: v for k, v in TINY.items() if k != "profile"}
        profile.write_text(yaml.safe_dump({"chapters": {"fcdnn-capacity": params}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CAPQ_RESULTS_DIR": str(tmp_path / "res"),
           "CAPQ_HEARTBEAT_GRACE_S": "5"}
    exe = [sys.executable, "-m", "capq_lib.report.cli", "sweep", "fcdnn-capacity", "--profile",
           str(profile), "--storage", url, "--device", "cpu", *extra]
    return subprocess.Popen(exe, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_cli_refuses_unknown_experiment_and_bad_population(tmp_path):
    url = f"journal:///{tmp_path}/s.journal"
    env = {**os.environ, "CAPQ_RESULTS_DIR": str(tmp_path / "res")}
    bad = subprocess.run([sys.executable, "-m", "capq_lib.report.cli", "sweep", "cnn-capacityy",
                          "--storage", url], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "EXPERIMENT must be one of fcdnn-capacity" in bad.stderr
    p = worker(tmp_path, url, "--population", "0")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 2 and "population must be an integer in [1," in err


@pytest.mark.slow
def test_a_killed_worker_loses_only_its_running_trials(tmp_path):
    url = f"journal:///{tmp_path}/s.journal"
    slow = ["--population", "2"]
    TINY["epochs"], saved = 400, TINY["epochs"]  # long enough batches to kill one mid-way
    try:
        p = worker(tmp_path, url, *slow)
        deadline = time.time() + 120
        while time.time() < deadline:
            time.sleep(0.5)
            if not os.path.exists(f"{tmp_path}/s.journal"):
                continue
            states = Counter(t[2] for t in complete_trials(url, None))
            if states[TrialState.COMPLETE] >= 2 and states[TrialState.RUNNING] >= 1:
                break
        before = {(t[0], t[1]): t[4] for t in complete_trials(url, None)
                  if t[2] == TrialState.COMPLETE}
        running = [t for t in complete_trials(url, None) if t[2] == TrialState.RUNNING]
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert before and running, "the worker was not caught mid-batch"
        again = worker(tmp_path, url, *slow)
        _, err = again.communicate(timeout=600)
        assert again.returncode == 0, err[-2000:]
    finally:
        TINY["epochs"] = saved
    trials = complete_trials(url, None)
    done = check_budget(trials)
    after = {(t[0], t[1]): t[4] for t in done}
    assert all(after[k] == v for k, v in before.items())  # nothing finished was lost or redone
    failed = [t for t in trials if t[2] == TrialState.FAIL]
    assert sorted(t[1] for t in failed) == sorted(t[1] for t in running)


@pytest.mark.slow
def test_two_workers_share_one_postgresql_study(tmp_path):
    url = os.environ.get("CAPQ_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CAPQ_REQUIRE_POSTGRES") == "1":
            pytest.fail("CAPQ_TEST_POSTGRES_URL is not set (see .ci/postgres.sh)")
        pytest.skip("no PostgreSQL server (CAPQ_TEST_POSTGRES_URL)")
    # a fresh study name for this run: the profile name is the temp file's stem
    (tmp_path / "tiny.yaml").unlink(missing_ok=True)
    tiny = tmp_path / f"pg{int(time.time() * 1000)}.yaml"
    params = {k: v for k, v in TINY.items() if k != "profile"}
    params["epochs"] = 300  # batches long enough that both workers get some
    tiny.write_text(yaml.safe_dump({"chapters": {"fcdnn-capacity": params}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CAPQ_RESULTS_DIR": str(tmp_path / "res")}
    cmd = [sys.executable, "-m", "capq_lib.report.cli", "sweep", "fcdnn-capacity", "--profile",
           str(tiny), "--storage", url, "--device", "cpu", "--population", "2"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    ran = [int(o[0].split("capq sweep: ")[1].split()[0]) for o in outs]
    assert sum(ran) == BUDGET and min(ran) > 0  # both worked, together exactly the budget
    store = Storage(url)
    mine = [s.study_name for s in optuna.get_all_study_summaries(store.optuna)
            if f"/{tiny.stem}@" in s.study_name]
    trials = [(n, t.number, t.state, t.user_attrs.get("plan"), t.value) for n in mine
              for t in optuna.load_study(study_name=n, storage=store.optuna).get_trials()
              if "seeded_from" not in t.user_attrs]
    check_budget(trials)


def test_without_n_factors_the_search_is_stage_1_alone_with_raced_restarts(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    study = FCDNNCapacityStudy(**{**TINY, "stage2_n_factors": [], "stage3_trials": 0,
                                  "restarts": 2, "race_at": 0.3})
    run_worker(study, device="cpu", storage=url, progress=False)
    trials = study_trials(study, url)
    assert sorted(trials.stage) == [1, 1, 1, 5, 5]
    # each trial reports the initialization that won its race
    assert trials.init_seed.notna().all()
    with pytest.raises(ConfigError, match="stage3_trials must be 0"):
        FCDNNCapacityStudy(**{**TINY, "stage2_n_factors": []})


def searched(points, model="1x10"):
    """Finished trials at (N, accuracy, lr) points, as the search sees them."""
    return pd.DataFrame([{"stage": stage, "n_samples": n, "accuracy": p, "lr": lr,
                          "momentum": 0.9, "decay_factor": 0.1, "model": model}
                         for stage, n, p, lr in points])


def arch(**kw):
    return FCDNNCapacityStudy(**{**TINY, "bracket_trials": 3, "bracket_factor": 1.5,
                                 **kw}).searches()[0]


def test_a_peak_at_the_top_of_the_grid_is_extended_with_the_winners_recipe():
    a = arch()
    # I = N at p = 1: the largest N is the peak, nothing above it
    plan = a.bracket_plan(searched([(1, 60, 1.0, 0.1), (1, 110, 1.0, 0.1),
                                    (2, 110, 1.0, 0.3)]))
    assert [(p.stage, p.params["n_samples"], p.params["lr"]) for p in plan] == [(4, 160, 0.1)]
    # the step past it holds less, but the peak memorized everything (I = N): not yet a
    # maximum, so N between it and 160 are trained (refined), not further out
    flanked = searched([(1, 60, 1.0, 0.1), (1, 110, 1.0, 0.1), (4, 160, 0.8, 0.1)])
    assert [p.params["n_samples"] for p in a.bracket_plan(flanked)] == [121, 133, 146]
    # below p = 1 at the peak: bracketed, nothing more to train
    done = searched([(1, 60, 1.0, 0.1), (1, 110, 0.995, 0.1), (4, 160, 0.8, 0.1)])
    assert a.bracket_plan(done) == []
    # a peak whose neighbour above holds *more* is not bracketed: extend again
    rising = searched([(1, 60, 1.0, 0.1), (1, 110, 1.0, 0.1), (4, 160, 0.99, 0.3)])
    assert [p.params["n_samples"] for p in a.bracket_plan(rising)] == [240]
    assert a.bracket_plan(rising)[0].params["lr"] == 0.3  # the new winner's recipe


def test_a_perfect_peak_is_refined_until_below_one_or_within_five_percent():
    from capq_lib.experiments.maxima import best_per_n, peak

    a = arch(refine_points=3, refine_trials=6)
    base = [(1, 60, 1.0, 0.1), (1, 110, 1.0, 0.1), (4, 160, 0.8, 0.1)]
    # round 1 memorizes 121 and 133 entirely, 146 not: the peak moves to 133, still p = 1,
    # and the next N (146) is 10 % above it: round 2 goes between them
    round1 = base + [(4, 121, 1.0, 0.1), (4, 133, 1.0, 0.1), (4, 146, 0.93, 0.1)]
    df = searched(round1)
    df["plan"] = [""] * 3 + ["s4r:121", "s4r:133", "s4r:146"]
    assert [p.params["n_samples"] for p in a.bracket_plan(df)] == [136, 139, 143]
    top = peak(best_per_n(df.assign(params=a.spec.n_params)))
    assert top.perfect and not top.refined and not top.bracketed
    # round 2: 139 memorized, 143 is within 5 % of it: a maximum at p = 1, bracketed
    df2 = searched(round1 + [(4, 136, 1.0, 0.1), (4, 139, 1.0, 0.1), (4, 143, 0.97, 0.1)])
    df2["plan"] = list(df.plan) + ["s4r:136", "s4r:139", "s4r:143"]
    top = peak(best_per_n(df2.assign(params=a.spec.n_params)))
    assert top.n_at_max == 139 and top.step_above < 0.05 and top.bracketed
    assert a.bracket_plan(df2) == []
    # the budget holds: with 3 refinement trials left after round 1 none, a lower bound
    assert arch(refine_points=3, refine_trials=3).bracket_plan(df) == []
    assert not peak(best_per_n(df.assign(params=a.spec.n_params))).bracketed


def test_a_peak_at_the_bottom_is_extended_downwards_and_the_budget_holds():
    a = arch()
    low = searched([(1, 100, 0.97, 0.1), (1, 200, 0.7, 0.1)])  # I(100) > I(200)
    assert [p.params["n_samples"] for p in a.bracket_plan(low)] == [70]
    spent = searched([(1, 100, 0.97, 0.1), (1, 200, 0.7, 0.1), (4, 300, 0.6, 0.1),
                      (4, 400, 0.55, 0.1), (4, 500, 0.52, 0.1)])
    assert a.bracket_plan(spent) == []  # three stage-4 trials: the budget is spent
    assert arch(bracket_trials=0).bracket_plan(low) == []


def test_replicates_are_the_winner_again_with_their_own_seeds():
    a = arch(replicates=3)
    plan = a.replicate_plan(searched([(1, 60, 1.0, 0.1), (1, 110, 0.99, 0.2),
                                      (1, 160, 0.8, 0.1)]))
    assert [p.params["n_samples"] for p in plan] == [110] * 3
    assert {p.params["lr"] for p in plan} == {0.2} and len({p.key for p in plan}) == 3
    assert arch(replicates=0).replicate_plan(searched([(1, 60, 1.0, 0.1)])) == []


@pytest.mark.parametrize("kwargs,name", [
    (dict(bracket_factor=1.0), "bracket_factor"), (dict(bracket_trials=-1), "bracket_trials"),
    (dict(replicates=-2), "replicates"), (dict(refine_points=0), "refine_points"),
    (dict(refine_trials=-1), "refine_trials")])
def test_bad_bracket_and_replicate_settings_name_the_parameter(kwargs, name):
    with pytest.raises(ConfigError, match=rf"^{name} must"):
        FCDNNCapacityStudy(**{**TINY, **kwargs})


def test_the_search_extends_its_grid_until_the_peak_is_bracketed(tmp_path):
    # a grid that the net memorizes entirely: the peak sits at its top edge
    study = FCDNNCapacityStudy(**{**TINY, "stage1_n_per_param": [0.25, 0.5],
                                  "stage2_n_factors": [], "stage3_trials": 0, "epochs": 300,
                                  "bracket_trials": 6, "bracket_factor": 2.0,
                                  "replicates": 3})
    url = f"journal:///{tmp_path}/s.journal"
    run_worker(study, "cpu", url, progress=False)
    trials = study_trials(study, url)
    ext = trials[trials.stage == 4]
    assert len(ext) >= 1 and ext.n_samples.min() > 70  # it went past the grid
    from capq_lib.experiments.capacity import capacity_summary

    row = capacity_summary(trials).iloc[0]
    assert row.replicates == 3
    # bracketed only when the peak is below p = 1 or refined to within 5 %
    assert row.bracketed == (row.p_at_max < 1 or row.step_above < 0.05)
    assert row.n_grid_max == trials[trials.stage != 5].n_samples.max() > row.n_at_max
    assert row.capacity_bits == pytest.approx(row.capacity_bits_mean)
    assert row.capacity_bits_search_max >= trials[trials.stage < 5].mutual_info.max() - 1e-9
