"""The quantization study: records, caching and resume, the lossless-bits rule, the advisor."""

import json

import pandas as pd
import pytest

from capq_lib.core.validate import ConfigError
from capq_lib.experiments import precision
from capq_lib.experiments.advise import advise, measured
from capq_lib.experiments.precision import (
    QuantizationStudy,
    fewest_lossless_bits,
    measure_quantization,
)
from capq_lib.report.widgets import requantize

from .conftest import run_capq

FAST = dict(
    fc_models=["1x8"], cnn_models=[], rnn_models=[4], capacity_fractions=[0.5, 1.0],
    seeds=2, schedule=[8, 4, 2], retrain_epochs={"fc": 2, "cnn": 1, "rnn": 1},
    recipes={"fc": {"optimizer": "sgd", "lr": 0.3, "epochs": 30, "batches_per_epoch": 4},
             "cnn": {"optimizer": "adam", "lr": 0.003, "epochs": 2},
             "rnn": {"optimizer": "adam", "lr": 0.01, "epochs": 5, "batches_per_epoch": 4}},
    paper_recipe_fc={"optimizer": "sgd", "lr": 0.03, "schedule": "step", "epochs": 30,
                     "batches_per_epoch": 4},
    long_retrain_factor=2, n_at_capacity={"1x8": 120, "LSTM-4": 200},
    capacity_bits={"1x8": 100.0, "LSTM-4": 170.0}, profile="unit")


@pytest.fixture(scope="module")
def measured_rows(tmp_path_factory):
    from capq_lib.experiments.results import ResultsCache

    cache = ResultsCache(tmp_path_factory.mktemp("results"))
    return measure_quantization(QuantizationStudy(**FAST), "cpu", cache, progress=False), cache


def test_records_hold_every_width_rule_and_variant(measured_rows):
    rows, _ = measured_rows
    assert set(rows.family) == {"fc", "rnn"}
    for col in ("family", "model", "n_samples", "capacity_fraction", "bits", "step_rule",
                "retrained", "accuracy", "mutual_info"):
        assert col in rows
    unit = rows[(rows.model == "1x8") & (rows.capacity_fraction == 1.0) & (rows.recipe == "ours")]
    assert unit.n_samples.iloc[0] == 120
    direct = unit[~unit.retrained & unit.bits.notna()]
    assert set(direct.step_rule) == {"l2", "max"} and set(direct.bits) == {8, 4, 2}
    # at full capacity the FCDNN also gets the other rule and the longer retraining
    retrained = unit[unit.retrained]
    variants = set(zip(retrained.step_rule, retrained.retrain_epochs, strict=True))
    assert variants == {("l2", 2), ("max", 2), ("l2", 4)}
    assert (rows.accuracy.between(0, 1)).all()
    half = rows[(rows.model == "1x8") & (rows.capacity_fraction == 0.5)]
    assert half.n_samples.iloc[0] == 60 and set(half.recipe) == {"ours"}
    assert set(half.definition) == {"N_at_max/2"} and set(unit.definition) == {"N_at_max x 1"}
    # the paper's half capacity: N = C / 2, labelled, no divergence variants
    paper_half = rows[(rows.model == "1x8") & (rows.definition == "C/2")]
    assert set(paper_half.n_samples) == {50} and set(paper_half.recipe) == {"ours"}
    assert paper_half.capacity_fraction.iloc[0] == pytest.approx(50 / 120, abs=1e-4)
    assert set(paper_half[paper_half.retrained].retrain_epochs) == {2}
    assert set(rows[rows.model == "LSTM-4"].definition) == {"N_at_max/2", "N_at_max x 1", "C/2"}
    assert set(rows.study) == {"fractions"}


def test_saved_nets_reproduce_the_float_and_direct_records(measured_rows):
    rows, cache = measured_rows
    key = rows[rows.model == "LSTM-4"].key.iloc[0]
    unit = rows[rows.key == key]
    for bits, rule in ((None, "l2"), (4, "max")):
        sel = unit[unit.bits.isna()] if bits is None else \
            unit[(unit.bits == bits) & (unit.step_rule == rule) & ~unit.retrained]
        again = requantize(key, bits, rule, cache)
        assert again.accuracy.tolist() == pytest.approx(sel.accuracy.tolist(), abs=1e-9)


def test_finished_units_are_not_redone_and_an_interrupted_one_leaves_nothing(tmp_path,
                                                                             monkeypatch):
    from capq_lib.experiments.results import ResultsCache

    cache = ResultsCache(tmp_path)
    study = QuantizationStudy(**{**FAST, "rnn_models": []})
    real, calls = precision.quantize_unit, []

    def flaky(study_, unit, n, device, *args):
        calls.append(unit.spec.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(study_, unit, n, device, *args)

    monkeypatch.setattr(precision, "quantize_unit", flaky)
    with pytest.raises(KeyboardInterrupt):
        measure_quantization(study, "cpu", cache, progress=False)
    assert len(cache.records("quantization")) == 1
    assert not list((tmp_path / "quantization").glob(".tmp-*"))
    calls.clear()
    monkeypatch.setattr(precision, "quantize_unit", real)
    rows = measure_quantization(study, "cpu", cache, progress=False)
    assert len(cache.records("quantization")) == len(study.units()) == 4
    assert rows.key.nunique() == 4

    def refuse(*a):
        raise AssertionError("a cached unit was recomputed")

    monkeypatch.setattr(precision, "quantize_unit", refuse)
    again = measure_quantization(study, "cpu", cache, progress=False)
    pd.testing.assert_frame_equal(again, rows)


def synthetic(accs: dict[int, float], float_acc: float = 1.0, **extra) -> pd.DataFrame:
    base = dict(family="fc", model="1x8", params=10, n_samples=20, capacity_fraction=1.0,
                data_per_param=2.0, recipe="ours", seed=1, step_rule="l2", retrained=True,
                retrain_epochs=5, main=True, **extra)
    rows = [{**base, "bits": None, "step_rule": None, "retrained": False,
             "accuracy": float_acc, "mutual_info": 20.0}]
    rows += [{**base, "bits": b, "accuracy": a, "mutual_info": 1.0} for b, a in accs.items()]
    return pd.DataFrame(rows)


def test_fewest_lossless_bits_needs_every_wider_width_lossless():
    t = fewest_lossless_bits(synthetic({8: 1.0, 6: 0.999, 5: 0.99, 4: 0.998, 2: 0.6}), 0.005)
    assert t.fewest_lossless_bits.tolist() == [6]  # 4 bits is fine but 5 is not
    t = fewest_lossless_bits(synthetic({8: 0.9, 6: 1.0}), 0.005)
    assert t.fewest_lossless_bits.isna().all()  # even the widest loses
    t = fewest_lossless_bits(synthetic({8: 0.9, 6: 0.9}), 0.2)
    assert t.fewest_lossless_bits.tolist() == [6]


def evidence_table() -> pd.DataFrame:
    parts = []
    for fam, model, params, ratios_bits in (
            ("fc", "1x8", 100, {0.5: 3, 1.0: 5, 2.0: 7}),
            ("rnn", "LSTM-4", 200, {1.0: 6, 3.0: 10})):
        for r, b in ratios_bits.items():
            parts.append(pd.DataFrame({
                "family": fam, "model": model, "params": params, "n_samples": int(r * params),
                "data_per_param": r, "capacity_fraction": r, "fewest_lossless_bits": float(b),
                "float_accuracy": 1.0, "widest": 12, "tolerance": 0.005, "recipe": "ours",
                "main": True}, index=[0]))
    return pd.concat(parts, ignore_index=True)


def test_advice_takes_the_nearest_measured_ratio_at_or_above():
    t = evidence_table()
    assert advise("fc", 100, 50, t).bits == 3
    assert advise("fc", 100, 60, t).bits == 5   # between 0.5 and 1.0: the safer 1.0
    assert advise("fc", 1000, 10, t).bits == 3  # far over-parameterized: the smallest ratio
    a = advise("rnn", 200, 400, t)
    assert a.bits == 10 and "LSTM-4" in a.text() and a.evidence.data_per_param.tolist() == [3.0]


@pytest.mark.parametrize("args,message", [
    (("cnn", 100, 10), "no quantization measurements for family 'cnn'"),
    (("gru", 100, 10), "family must be one of 'fc', 'cnn', 'rnn'"),
    (("fc", -5, 10), "params must be an integer >= 1"),
    (("fc", 100, -1), "samples must be an integer >= 1"),
    (("fc", 100, 0), "samples must be an integer >= 1"),
    (("fc", 10**23, 10), r"params must be within 10x of the fc nets measured \(100 to 100"),
    (("fc", 9, 1), "params must be within 10x"),
    (("fc", 100, 201), "above the largest measured for fc"),
])
def test_advice_refuses_what_it_has_no_data_for(args, message):
    with pytest.raises(ConfigError, match=message):
        advise(*args, evidence_table())


def test_study_rejects_bad_settings_early():
    with pytest.raises(ConfigError, match="bits must be an integer in"):
        QuantizationStudy(**{**FAST, "schedule": [8, 0]})
    with pytest.raises(ConfigError, match="schedule must go from more bits to fewer"):
        QuantizationStudy(**{**FAST, "schedule": [2, 4, 8]})
    with pytest.raises(ConfigError, match="step_rule must be one of"):
        QuantizationStudy(**{**FAST, "step_rule": "mean"})
    with pytest.raises(ConfigError, match="model 'wide' is not a fc model"):
        QuantizationStudy(**{**FAST, "fc_models": ["wide"]})
    with pytest.raises(ConfigError, match="capacity_fractions must be a number in"):
        QuantizationStudy(**{**FAST, "capacity_fractions": [0.0]})


def test_missing_capacity_results_name_the_chapter_to_build(tmp_path, monkeypatch):
    """A book build needs the measured capacity; a notebook in a fresh kernel (Colab,
    Binder) starts from the paper's instead, and says so."""
    from capq_lib.experiments.precision import capacity_point, paper_point
    from capq_lib.experiments.results import ResultsCache

    study = QuantizationStudy(**{**FAST, "n_at_capacity": None, "capacity_bits": None})
    monkeypatch.setenv("CAPQ_BATCH", "1")
    with pytest.raises(ConfigError, match="build the fcdnn-capacity chapter first"):
        measure_quantization(study, "cpu", ResultsCache(tmp_path), progress=False)
    assert not (tmp_path / "quantization").exists()
    monkeypatch.delenv("CAPQ_BATCH")
    unit = study.units()[0]
    with pytest.warns(UserWarning, match="using the paper's"):
        point = capacity_point(study, unit, ResultsCache(tmp_path))
    assert point.n_at_max == round(2.3 * unit.spec.n_params) and point.lr is None
    with pytest.warns(UserWarning):
        assert paper_point(unit) == point


def test_cli_results_and_advise(measured_rows):
    rows, cache = measured_rows
    proc = run_capq("results", "quantization", "--profile", "unit", results=cache.root)
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert len(records) == len(rows)
    assert {"family", "model", "n_samples", "capacity_fraction", "bits", "step_rule",
            "retrained", "accuracy", "mutual_info"} <= set(records[0])
    assert any(r["bits"] is None for r in records)
    table = measured("unit", cache)
    ratio = table[table.family == "fc"].data_per_param.max()
    proc = run_capq("advise", "--family", "fc", "--params", "100", "--samples",
                    str(int(ratio * 100)), results=cache.root)
    assert proc.returncode == 0, proc.stderr
    assert "per weight" in proc.stdout and "evidence:" in proc.stdout and "1x8" in proc.stdout
    for args, message in ((["--family", "cnn"], "no quantization measurements for family"),
                          (["--family", "fc", "--params", "-3"], "params must be an integer")):
        full = {"--family": "fc", "--params": "100", "--samples": "10"}
        full.update(dict(zip(args[::2], args[1::2], strict=True)))
        proc = run_capq("advise", *[v for kv in full.items() for v in kv], results=cache.root)
        assert proc.returncode == 2 and message in proc.stderr


def test_divergence_study_reports_every_setting(measured_rows):
    from capq_lib.report.scorecard import divergence_table, divergence_verdicts

    rows, _ = measured_rows
    table = fewest_lossless_bits(rows, 0.005)
    lines = divergence_verdicts(table, "l2", 2)
    assert len(lines) == 5 and all("1x8 " in line for line in lines)
    assert lines[1].startswith("- Paper-range recipe")
    wide = divergence_table(table)
    assert set(wide.recipe) == {"ours", "paper"} and "1x8" in wide


def test_a_stalled_seed_below_capacity_is_retried_at_a_third_of_the_lr(tmp_path, monkeypatch):
    from capq_lib.experiments.results import ResultsCache

    real, calls = precision.train_members, []

    def spy(spec, members, device, **kw):
        calls.append(sorted({round(m.recipe.lr, 6) for m in members}))
        return real(spec, members, device, **kw)

    monkeypatch.setattr(precision, "train_members", spy)
    study = QuantizationStudy(**{**FAST, "rnn_models": [], "capacity_fractions": [0.5, 1.0],
                                 "recipes": {**FAST["recipes"],
                                             "fc": {"optimizer": "sgd", "lr": 9.0,
                                                    "epochs": 5, "batches_per_epoch": 4}}})
    rows = measure_quantization(study, "cpu", ResultsCache(tmp_path), progress=False)
    assert [3.0] in calls  # the half-capacity unit retried its stalled seeds at lr / 3
    full = rows[(rows.capacity_fraction == 1.0) & (rows.recipe == "ours")]
    assert set(full.lr) == {9.0}  # at capacity nothing is retried


def test_the_c_overrides_are_checked_before_any_training(tmp_path):
    from capq_lib.experiments.results import ResultsCache

    with pytest.raises(ConfigError, match="capacity_bits gives model '1x8' without "
                                          "n_at_capacity"):
        QuantizationStudy(**{**FAST, "n_at_capacity": None})
    study = QuantizationStudy(**{**FAST, "capacity_bits": None})
    with pytest.raises(ConfigError, match="capacity_bits must give the capacity in bits of "
                                          "model '1x8'.*C/2 unit needs it"):
        measure_quantization(study, "cpu", ResultsCache(tmp_path), progress=False)
    assert not (tmp_path / "quantization").exists()
    # without C units the N overrides alone are enough
    alone = QuantizationStudy(**{**FAST, "capacity_bits": None, "capacity_bits_fractions": []})
    assert {u.definition for u in alone.units()} == {"N_at_max/2", "N_at_max x 1"}
    with pytest.raises(ConfigError, match="capacity_bits_fractions must be a number in"):
        QuantizationStudy(**{**FAST, "capacity_bits_fractions": [-0.5]})


def test_capacity_point_reads_n_at_max_and_c_from_the_capacity_chapter(tmp_path):
    from capq_lib.experiments.results import ResultsCache

    cache = ResultsCache(tmp_path)
    cache.put("fcdnn-capacity", {"model": "1x8"}, {"profile": "unit", "model": "1x8",
                                                   "n_at_max": 130, "capacity_bits": 111.0,
                                                   "lr_at_max": 0.2}, "cpu", 0.0)
    study = QuantizationStudy(**{**FAST, "n_at_capacity": None, "capacity_bits": None,
                                 "rnn_models": []})
    units = {u.definition: u for u in study.units() if u.recipe == "ours"}
    point = precision.capacity_point(study, units["C/2"], cache)
    assert (point.n_at_max, point.capacity_bits, point.lr) == (130, 111.0, 0.2)
    assert point.n_samples(units["C/2"]) == 56 and point.n_samples(units["N_at_max/2"]) == 65
    assert precision.definition("n_at_max", 0.25) == "N_at_max x 0.25"
    assert precision.definition("capacity_bits", 1.0) == "C x 1"


def settings(spec: dict[tuple[str, str], list[dict[int, float]]], widest: int = 8
             ) -> pd.DataFrame:
    """Rows of several (model, definition) settings, one accuracy-by-bits dict per seed
    (float accuracy 1.0)."""
    parts = []
    for (model, d), seeds in spec.items():
        n = {"N_at_max x 1": 100, "N_at_max/2": 50, "C/2": 42}[d]
        for seed, accs in enumerate(seeds):
            parts.append(synthetic(accs, definition=d, study="fractions")
                         .assign(model=model, seed=seed, n_samples=n, data_per_param=n / 10,
                                 capacity_fraction=n / 100))
    return pd.concat(parts, ignore_index=True)


def test_lossless_tables_by_definition_and_by_tolerance():
    rows = settings({
        ("1x8", "N_at_max x 1"): [{8: 1.0, 6: 0.996, 4: 0.9}, {8: 0.98, 6: 0.98, 4: 0.9}],
        ("1x8", "N_at_max/2"): [{8: 1.0, 6: 1.0, 4: 0.996}, {8: 1.0, 6: 1.0, 4: 0.99}],
        ("1x8", "C/2"): [{8: 1.0, 6: 1.0, 4: 1.0}, {8: 1.0, 6: 1.0, 4: 1.0}]})
    table = fewest_lossless_bits(rows, 0.005)
    wide = precision.lossless_by_definition(table)
    assert wide.loc[0, "N_at_max x 1"] == ">8"  # the seeds' mean lost a point at 8 bits
    assert (wide.loc[0, "N_at_max/2"], wide.loc[0, "C/2"]) == ("6", "4")
    assert wide.loc[0, "paper, C/2"] == 4 and wide.loc[0, "paper, full (N_at_max)"] == 6
    sens = precision.lossless_sensitivity(rows)
    full = sens[sens.definition == "N_at_max x 1"].set_index("seed")
    assert full.loc["1"].tolist()[-4:] == ["8", "6", "6", "6"]    # 0, 0.5, 1, 2 points
    assert full.loc["2"].tolist()[-4:] == [">8", ">8", ">8", "6"]
    assert full.loc["mean"].tolist()[-4:] == [">8", ">8", "8", "6"]
    assert list(sens.definition.unique()) == ["N_at_max x 1", "N_at_max/2", "C/2"]
    lines = precision.sensitivity_lines(sens)
    assert lines[0].startswith("Per net, loosening the tolerance from 0 pt to 2 pt lowers")
    sizes = pd.DataFrame([{"model": "1x8", "extra samples": 50 / 42 - 1}])
    text = " ".join(precision.half_capacity_lines(table, sizes))
    assert "19 to 19 % more samples" in text and "N_at_max/2 1x8 6; C/2 1x8 4" in text


def test_fewer_samples_fewer_bits_ranks_a_loss_at_the_widest_as_worse_not_absent():
    def table(bits: list[float]) -> pd.DataFrame:
        return pd.DataFrame({"family": "fc", "model": "1x8", "recipe": "ours", "main": True,
                             "study": "fractions", "data_per_param": [0.5, 1.0, 2.0],
                             "fewest_lossless_bits": bits, "widest": 12})

    nan = float("nan")
    ok = precision.fewer_samples_fewer_bits(table([4.0, 6.0, nan]))
    assert ok.monotone.tolist() == [True] and ok["fewest lossless bits"][0] == "4, 6, >12"
    bad = precision.fewer_samples_fewer_bits(table([nan, 6.0, 8.0]))
    assert bad.monotone.tolist() == [False]  # dropping the loss would have called it monotone


def test_recipe_line_reports_the_learning_rates_recorded(measured_rows):
    rows, _ = measured_rows
    (line,) = precision.recipe_lines(rows, QuantizationStudy(**FAST))
    assert "our recipe (SGD, cosine decay, lr 0.3 (the recipe's), 30 epochs)" in line
    assert "the paper-range recipe (SGD, step decay, lr 0.03 (the recipe's), 30 epochs)" in line
    assert line.endswith("the paper searched lr 0.001 to 0.05 (lr 0.3 lies outside it).")


def test_first_look_trains_the_chapters_own_nets_until_the_chapter_saved_them(measured_rows,
                                                                             tmp_path):
    """A fresh kernel gets the same nets the chapter will save (same seeds, recipe, lr);
    once the chapter ran, they are loaded, not trained again."""
    from capq_lib.experiments.results import ResultsCache
    from capq_lib.report.widgets import requantized

    _, saved_cache = measured_rows
    study = QuantizationStudy(**FAST)
    units = precision.first_look_units(study)
    assert [(u.spec.name, u.definition) for u in units] == [("1x8", "N_at_max x 1"),
                                                           ("LSTM-4", "N_at_max x 1")]
    fresh = precision.unit_nets(study, units[0], "cpu", ResultsCache(tmp_path), progress=False)
    assert fresh.source.startswith("trained just now") and fresh.n_samples == 120
    assert fresh.source.endswith("N at capacity: given (n_at_capacity)")
    assert not list(tmp_path.rglob("*.json"))  # a first look writes nothing to the cache
    saved = precision.unit_nets(study, units[0], "cpu", saved_cache, progress=False)
    assert saved.source == "saved by this chapter" and saved.seeds == fresh.seeds
    for bits in (None, 4, 2):
        a, b = requantized(fresh, bits, "l2"), requantized(saved, bits, "l2")
        assert a.accuracy.tolist() == pytest.approx(b.accuracy.tolist(), abs=1e-9)


def test_first_look_is_absent_from_the_book_and_trains_each_model_once(monkeypatch, tmp_path):
    from capq_lib.experiments.results import ResultsCache
    from capq_lib.report import widgets

    study = QuantizationStudy(**FAST)
    shown, calls = [], []
    monkeypatch.setattr(widgets, "display", shown.append)
    monkeypatch.setenv("CAPQ_BATCH", "1")
    widgets.first_look(study, "cpu", ResultsCache(tmp_path))
    assert shown == []
    monkeypatch.delenv("CAPQ_BATCH")
    real = widgets.unit_nets

    def counted(study_, unit, *args):
        # the controls are on screen before any training starts (its progress bar shows)
        assert isinstance(shown[0], widgets.w.VBox)
        calls.append(unit.spec.name)
        return real(study_, unit, *args, progress=False)

    monkeypatch.setattr(widgets, "unit_nets", counted)
    widgets.first_look(study, "cpu", ResultsCache(tmp_path))
    box = shown[0]
    pick, (bits, use_float), rule = box.children[0], box.children[1].children, box.children[2]
    assert calls == ["1x8"]  # the smallest model, at once
    bits.value, rule.value, use_float.value = 3, "max", True
    assert calls == ["1x8"]  # moving the controls requantizes, it does not retrain
    pick.value = 1
    assert calls == ["1x8", "LSTM-4"]


def test_explorer_requantizes_the_chapters_saved_nets_as_its_controls_move(measured_rows,
                                                                          monkeypatch):
    from capq_lib.report import widgets

    rows, cache = measured_rows
    monkeypatch.setenv("CAPQ_BATCH", "1")
    assert "needs a running Python kernel" in widgets.explorer(rows, cache).data
    monkeypatch.delenv("CAPQ_BATCH")
    real, shown = widgets.requantized, []

    def spy(nets, bits, rule):
        shown.append((nets.spec.name, bits, rule))
        return real(nets, bits, rule)

    monkeypatch.setattr(widgets, "requantized", spy)
    box = widgets.explorer(rows, cache)
    pick, (bits, _), rule = box.children[0], box.children[1].children, box.children[2]
    assert len(pick.options) == rows.key.nunique()
    bits.value, rule.value = 2, "max"
    pick.value = pick.options[-1][1]
    first = rows.drop_duplicates("key").model.iloc[0]
    last = rows.drop_duplicates("key").model.iloc[-1]
    assert shown == [(first, 6, "l2"), (first, 2, "l2"), (first, 2, "max"), (last, 2, "max")]
