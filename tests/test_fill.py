"""The fill sweep: records, resume, per-net lossless bits, generated findings, figures."""

import json

import numpy as np
import pandas as pd
import pytest

from capq_lib.core.info import mutual_information
from capq_lib.core.validate import ConfigError
from capq_lib.experiments import fill
from capq_lib.experiments.advise import measured
from capq_lib.experiments.precision import QuantizationStudy, fewest_lossless_bits
from capq_lib.experiments.results import ResultsCache
from capq_lib.report import plots

from .conftest import run_capq

SWEEP = dict(
    fc_models=["1x8"], cnn_models=[], rnn_models=[], schedule=[8, 4, 2],
    retrain_epochs={"fc": 2, "cnn": 1, "rnn": 1},
    recipes={"fc": {"optimizer": "sgd", "lr": 0.3, "epochs": 30, "batches_per_epoch": 4},
             "cnn": {"optimizer": "adam", "lr": 0.003, "epochs": 2},
             "rnn": {"optimizer": "adam", "lr": 0.01, "epochs": 5, "batches_per_epoch": 4}},
    paper_recipe_fc={"optimizer": "sgd", "lr": 0.03, "schedule": "step", "epochs": 30,
                     "batches_per_epoch": 4},
    fill_models=["1x10"], fill_n_per_param=[1.0, 2.0, 3.0], fill_seeds=2,
    fill_epochs={"paper": 20}, profile="unit")


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    cache = ResultsCache(tmp_path_factory.mktemp("results"))
    study = QuantizationStudy(**SWEEP)
    return fill.measure_fill(study, "cpu", cache, progress=False), cache, study


def test_one_record_per_model_and_recipe_with_every_net_and_width(swept):
    rows, cache, study = swept
    assert len(cache.records("quantization")) == 2 and rows.key.nunique() == 2
    assert set(rows.study) == {"fill"} and set(rows.recipe) == {"ours", "paper"}
    assert len(rows) == 2 * 3 * 2 * (1 + 3)  # recipes x N x seeds x (float + widths)
    assert rows.groupby("recipe").train_epochs.first().to_dict() == {"ours": 30, "paper": 20}
    floats = rows[rows.bits.isna()]
    assert sorted(set(floats.n_samples)) == [132, 264, 396]  # P = 132
    # the same (N, seed) nets, data and init, under both recipes; fresh ones per N and seed
    seeds = floats.groupby("recipe").seed.apply(sorted)
    assert seeds["ours"] == seeds["paper"] and len(set(seeds["ours"])) == 6
    q = rows[rows.bits.notna()]
    assert q.retrained.all() and set(q.step_rule) == {"l2"} and set(q.bits) == {8, 4, 2}
    assert np.allclose(floats.bits_per_param_float,
                       mutual_information(floats.n_samples, floats.accuracy) / 132)


def test_fewest_lossless_bits_is_each_nets_own(swept):
    rows, _, study = swept
    nets = fill.per_net(rows, study.lossless_tolerance)
    assert len(nets) == 12
    recorded = rows[rows.bits.isna()].set_index(["recipe", "seed"]).fewest_lossless_bits
    for r in nets.itertuples():
        one = rows[(rows.recipe == r.recipe) & (rows.seed == r.seed)]
        accs = one[one.bits.notna()].sort_values("bits", ascending=False)
        ok = (accs.accuracy >= one[one.bits.isna()].accuracy.iloc[0] - 0.005).cummin()
        expect = accs.bits[ok].min() if ok.any() else np.nan
        assert r.fewest_lossless_bits == pytest.approx(expect, nan_ok=True)
        got = recorded[(r.recipe, r.seed)]
        assert (got != got and expect != expect) or got == expect
    assert (nets.ranked_bits == nets.fewest_lossless_bits.fillna(9)).all()


def test_an_interrupted_sweep_resumes_after_the_last_finished_pair(tmp_path, monkeypatch):
    cache, study = ResultsCache(tmp_path), QuantizationStudy(**SWEEP)
    real, calls = fill.run_fill, []

    def flaky(*args):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(fill, "run_fill", flaky)
    with pytest.raises(KeyboardInterrupt):
        fill.measure_fill(study, "cpu", cache, progress=False)
    assert len(cache.records("quantization")) == 1
    monkeypatch.setattr(fill, "run_fill", real)
    rows = fill.measure_fill(study, "cpu", cache, progress=False)

    def refuse(*a):
        raise AssertionError("a cached pair was recomputed")

    monkeypatch.setattr(fill, "run_fill", refuse)
    pd.testing.assert_frame_equal(fill.measure_fill(study, "cpu", cache, progress=False), rows)


def test_cli_lists_the_sweep_and_the_advisor_ignores_it(swept):
    rows, cache, _ = swept
    proc = run_capq("results", "quantization", "--profile", "unit", results=cache.root)
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert len(records) == len(rows) and {r["study"] for r in records} == {"fill"}
    assert {"bits_per_param_float", "fewest_lossless_bits", "seed", "recipe", "n_samples",
            "n_per_param"} <= set(records[0])
    assert measured("unit", cache).empty


def test_sweep_settings_are_checked():
    with pytest.raises(ConfigError, match="fill_n_per_param up to 3.0 asks fill model 1x8"):
        QuantizationStudy(**{**SWEEP, "fill_models": ["1x8"]})
    with pytest.raises(ConfigError, match="fill_recipes must be one of 'ours', 'paper'"):
        QuantizationStudy(**{**SWEEP, "fill_recipes": ["adam"]})
    with pytest.raises(ConfigError, match="fill_epochs key must be one of"):
        QuantizationStudy(**{**SWEEP, "fill_epochs": {"mine": 5}})
    with pytest.raises(ConfigError, match="fill_seeds must be an integer"):
        QuantizationStudy(**{**SWEEP, "fill_seeds": 0})
    with pytest.raises(ConfigError, match="model 'wide' is not a fc model"):
        QuantizationStudy(**{**SWEEP, "fill_models": ["wide"]})


def nets_table(recipe: str, bpp: list[float], bits: list[float], model: str = "1x32"
               ) -> pd.DataFrame:
    return pd.DataFrame({"model": model, "params": 1122, "recipe": recipe,
                         "definition": "fill", "seed": range(len(bpp)),
                         "n_samples": 1000, "n_per_param": np.repeat([1.0, 2.0],
                                                                     len(bpp) // 2),
                         "float_accuracy": 1.0, "bits_per_param_float": bpp,
                         "fewest_lossless_bits": bits, "widest": 12,
                         "ranked_bits": pd.Series(bits).fillna(13)})


def test_findings_are_computed_from_the_nets():
    nan = float("nan")
    nets = pd.concat([
        nets_table("ours", [1.0, 1.2, 1.8, 2.0, 2.3, 3.0], [5, 6, 8, 8, 9, nan]),
        nets_table("paper", [1.0, 1.1, 1.5, 1.6], [5, 6, 5, 6])], ignore_index=True)
    lines = fill.findings(nets, 2.3, 6)
    assert len(lines) == 4
    assert lines[0].startswith("Our recipe: 6 nets (1x32) stored 1.00 to 3.00 bits")
    assert "1 lost even at 12 bits (counted as 13)" in lines[0]
    assert "rise with the bits stored" in lines[0] and "reaches 6 bits at about" in lines[0]
    assert "the 2 nets that needed at most 6 bits stored 1.00-1.20" in lines[0]
    assert "no clear trend" in lines[1] or "rise" in lines[1]
    assert lines[2] == ("At equal fill, over the range both recipes reached (1.00 to 1.60 "
                        "bits per parameter): our recipe's 2 nets (mean fill 1.10) needed 5.5 "
                        "bits on average, sd 0.7; the paper-range recipe's 4 nets (mean fill "
                        "1.30) needed 5.5 bits on average, sd 0.6.")
    assert lines[3].startswith("Nets of our recipe that stored what the paper's did")
    assert "0 of 1 kept their accuracy at 6 bits" in lines[3]
    fit = fill.fit(nets).set_index("recipe")
    assert fit.loc["ours", "slope_lo"] > 0 and fit.loc["ours", "nets"] == 6
    flat = fill.findings(nets_table("ours", [1.0, 1.5, 2.0, 2.5], [8, 6, 8, 6]), 2.3, 6)
    assert "no clear trend" in flat[0] and flat[1].startswith("Nets of our recipe")
    far = fill.findings(nets_table("ours", [1.0, 1.5], [6, 6]), 2.3, 6)
    assert far[-1].startswith("None of our recipe's nets stored within 0.25")


def test_figures_draw_a_loss_at_the_widest_width_above_it():
    nan = float("nan")
    nets = nets_table("ours", [1.0, 1.2, 2.0, 2.2], [5, 6, 8, nan])
    fig = plots.fill_sweep(nets, 2.3, 6, fill.fit(nets))
    ys = [y for tr in fig.data if tr.y is not None for y in tr.y]
    assert not any(v != v for v in ys) and max(ys) > 12.5
    assert fig.layout.yaxis.ticktext[-1] == ">12"
    assert any(tr.name.startswith("paper: 2.3 bits/param") for tr in fig.data)
    table = pd.DataFrame({"family": "fc", "model": "1x8", "data_per_param": [0.5, 1.0, 2.0],
                          "fewest_lossless_bits": [4.0, 6.0, nan], "widest": 12})
    fig = plots.lossless_bits_by_ratio(table, {"fc": 6})
    assert list(fig.data[0].y) == [4.0, 6.0, 13.0] and list(fig.data[0].text)[-1] == ">12"


def test_per_net_reads_the_fractions_study_too():
    rows = []
    for seed, acc4 in ((1, 1.0), (2, 0.9)):
        base = dict(family="fc", model="1x8", params=10, n_samples=20, capacity_fraction=1.0,
                    data_per_param=2.0, recipe="ours", seed=seed, definition="N_at_max x 1",
                    study="fractions", main=True)
        rows += [{**base, "bits": None, "step_rule": None, "retrained": False,
                  "retrain_epochs": 0, "accuracy": 1.0, "mutual_info": 20.0},
                 {**base, "bits": 8, "step_rule": "l2", "retrained": True,
                  "retrain_epochs": 2, "accuracy": 1.0, "mutual_info": 20.0},
                 {**base, "bits": 4, "step_rule": "l2", "retrained": True,
                  "retrain_epochs": 2, "accuracy": acc4, "mutual_info": 10.0}]
    nets = fill.per_net(pd.DataFrame(rows), 0.005)
    assert nets.fewest_lossless_bits.tolist() == [4, 8]
    assert nets.bits_per_param_float.tolist() == [2.0, 2.0]
    mean = fewest_lossless_bits(pd.DataFrame(rows), 0.005)
    assert mean.fewest_lossless_bits.tolist() == [8]  # the seeds' mean is another number


def test_findings_compare_nets_that_memorized_everything_with_those_that_did_not():
    nets = nets_table("ours", [1.0, 1.5, 2.0, 2.5], [5, 6, 8, 9]).assign(
        float_accuracy=[1.0, 1.0, 0.99, 0.97])
    line = [x for x in fill.findings(nets, 2.3, 6) if x.startswith("Memorized all or not")]
    assert line == ["Memorized all or not: our recipe: 2 nets that memorized every sample "
                    "(1.00-1.50 bits per parameter) needed 5.5 bits on average, 2 that did "
                    "not (2.00-2.50) needed 8.5."]


def test_cached_nets_read_the_sweep_back_for_the_claims(swept):
    rows, cache, study = swept
    nets = fill.cached_nets("unit", cache)
    pd.testing.assert_frame_equal(
        nets.drop(columns="profile").sort_values(["recipe", "seed"]).reset_index(drop=True),
        fill.per_net(rows, study.lossless_tolerance).sort_values(["recipe", "seed"])
        .reset_index(drop=True))
    assert fill.cached_nets("other", cache).empty
    skipped = QuantizationStudy(**{**SWEEP, "fill_skip": [["1x10", "paper"]]})
    assert skipped.fill_pairs() == [("1x10", "ours")]
    with pytest.raises(ConfigError, match="fill_skip must list"):
        QuantizationStudy(**{**SWEEP, "fill_skip": [["2x32", "paper"]]})
