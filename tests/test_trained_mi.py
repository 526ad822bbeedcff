"""Eq. (1) against the plug-in estimate: the information theory, and the check on trained nets."""

import numpy as np
import pandas as pd
import pytest
import torch

from capq_lib.core.info import (
    binary_channel_information,
    binary_entropy,
    confusion_counts,
    empirical_mutual_information,
    mutual_information,
)
from capq_lib.core.validate import ConfigError
from capq_lib.engine.population import Member, stack_memorization_sets, train_members
from capq_lib.experiments import trained_mi
from capq_lib.experiments.channel import MICheck, mi_check, summary
from capq_lib.experiments.trained_mi import KIND, TrainedMICheck, measure_trained_mi, net_row
from capq_lib.report import plots


def table(n_per_class: int, wrong_0: int, wrong_1: int) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels and answers with exactly ``wrong_0`` 0s and ``wrong_1`` 1s wrong."""
    y = np.repeat([0, 1], n_per_class)
    yh = y.copy()
    yh[:wrong_0] = 1
    yh[n_per_class:n_per_class + wrong_1] = 0
    return y, yh


def test_plugin_equals_eq1_for_symmetric_errors():
    y, yh = table(500, 50, 50)  # p = 0.9, the same error rate on both classes
    assert empirical_mutual_information(y, yh) == pytest.approx(mutual_information(1000, 0.9),
                                                                abs=1e-9)
    row = net_row(y, yh)
    assert row["gap_per_sample"] == pytest.approx(0.0, abs=1e-12)
    assert row["fano_slack_per_sample"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("e", [0.05, 0.2, 0.5])
def test_plugin_exceeds_eq1_on_a_z_channel_by_what_theory_gives(e: float):
    n = 1000
    y, yh = table(n // 2, 0, round(e * n / 2))  # errors only on the 1s, at rate e
    p = 1 - e / 2
    exact = binary_entropy((1 - e) / 2) - binary_entropy(e) / 2  # I(Y; Y_hat) per sample
    assert binary_channel_information(0.0, e) == pytest.approx(exact, abs=1e-12)
    plugin = empirical_mutual_information(y, yh)
    assert plugin == pytest.approx(n * exact, abs=1e-9)
    gap = plugin - mutual_information(n, p)
    assert gap == pytest.approx(n * (exact - 1 + binary_entropy(e / 2)), abs=1e-9)
    assert gap / n > 0.02  # well past the chapter's tolerance: the check can fail
    assert net_row(y, yh)["gap_per_sample"] == pytest.approx(gap / n, abs=1e-12)
    assert trained_mi.one_sided_gap(np.array([p]))[0] == pytest.approx(gap / n, abs=1e-12)


def fake_rows(errors: list[tuple[int, int]], n_per_class: int = 200) -> pd.DataFrame:
    """Rows as the check writes them, for hand-made answers (one seed per error pattern)."""
    rows = []
    for k, (w0, w1) in enumerate(errors):
        y, yh = table(n_per_class, w0, w1)
        rows.append({"profile": "test", "model": "1x8", "params": 90, "depth": 1, "width": 8,
                     "n_samples": 2 * n_per_class, "n_per_param": 2 * n_per_class / 90,
                     "seed": k, "epochs_run": 1, "memorized": w0 + w1 == 0,
                     **net_row(y, yh)})
    return pd.DataFrame(rows, columns=trained_mi.COLUMNS)


def test_one_sided_errors_fail_the_check_and_the_page_says_so():
    rows = fake_rows([(0, 60), (0, 40)])  # every error on the 1s
    top = trained_mi.largest_gap(rows, 0.02)
    assert not top["within_per_net"] and not top["within_mean"]
    assert top["net_gap_per_sample"] > 0.02 and top["net_error_0"] == 0.0
    text = trained_mi.findings(rows, 0.02)
    assert "(outside \u00b10.02)" in text and "the asymmetry of the errors." in text
    fair = trained_mi.findings(fake_rows([(0, 0), (0, 0)]), 0.02)  # all memorized
    assert "(within \u00b10.02)" in fair and "No net has a negative gap." in fair


def test_eq1_is_a_lower_bound_for_fair_labels():
    e0, e1 = np.meshgrid(np.linspace(0, 0.5, 26), np.linspace(0, 0.5, 26))
    exact = binary_channel_information(e0, e1)
    eq1 = mutual_information(1, 1 - (e0 + e1) / 2)
    assert np.all(exact >= eq1 - 1e-12)
    np.testing.assert_allclose(np.diag(exact), np.diag(eq1), atol=1e-12)  # symmetric: equal


def test_gap_splits_into_fano_slack_and_label_deficit():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(20, 400))
        y = rng.integers(0, 2, n)
        yh = np.where(rng.random(n) < rng.uniform(0, 0.5, 2)[y], 1 - y, y)
        r = net_row(y, yh)
        assert r["gap_per_sample"] == pytest.approx(
            r["fano_slack_per_sample"] - r["label_deficit_per_sample"], abs=1e-12)
        assert r["fano_slack_per_sample"] >= -1e-12
        assert r["label_deficit_per_sample"] >= 0
        assert r["accuracy"] == pytest.approx(np.mean(y == yh))
    assert confusion_counts([0, 1, 1], [1, 1, 0]).tolist() == [[0, 1], [1, 1]]


TINY = dict(models=("1x8",), n_per_param=(0.5, 2.0), seeds=2, epochs=10, eval_every=5,
            profile="test")


def test_trained_check_runs_and_a_rerun_trains_nothing(cache, monkeypatch):
    check = TrainedMICheck(**TINY)
    rows = measure_trained_mi(check, "cpu", cache)
    assert list(rows.columns) == trained_mi.COLUMNS
    assert len(rows) == 2 * 2 and set(rows.n_samples) == {45, 180}  # P = 90
    assert rows.params.eq(90).all() and rows.profile.eq("test").all()
    np.testing.assert_allclose(rows.gap_bits, rows.plugin_bits - rows.eq1_bits)
    np.testing.assert_allclose(rows.eq1_bits, mutual_information(rows.n_samples, rows.accuracy))
    records = cache.records(KIND)
    assert len(records) == 2  # one per (model, N), each holding every seed
    assert all(r["result"]["profile"] == "test" and len(r["result"]["rows"]) == 2
               for r in records)

    def no_training(*args, **kwargs):
        raise AssertionError("a cached (model, N) was trained again")

    monkeypatch.setattr(trained_mi, "train_members", no_training)
    again = measure_trained_mi(check, "cpu", cache)
    pd.testing.assert_frame_equal(rows, again)
    # readers that must not train find the same nets in the cache
    pd.testing.assert_frame_equal(trained_mi.cached_rows("test", cache),
                                  rows.sort_values("n_samples", kind="stable")
                                  .reset_index(drop=True))
    assert trained_mi.cached_rows("quick", cache).empty
    # a new N trains only that N
    monkeypatch.undo()
    more = measure_trained_mi(TrainedMICheck(**{**TINY, "n_per_param": (0.5, 2.0, 1.0)}),
                              "cpu", cache)
    assert len(more) == 6 and len(cache.records(KIND)) == 3


def test_answers_agree_with_the_training_accuracy():
    """The answers the check reads are the ones the population engine scored."""
    check = TrainedMICheck(**TINY)
    spec, cpu = check.specs()[0], torch.device("cpu")
    members = [Member(n, s, s, check.recipe()) for _, n, _ in check.units()
               for s in check.member_seeds(spec, n)]
    x, y = stack_memorization_sets(members, spec.input_shape, cpu)
    out = train_members(spec, members, cpu, data=(x, y))
    answers = trained_mi.predictions(spec, [m.model for m in out.members], x)
    for k, (m, res) in enumerate(zip(members, out.members, strict=True)):
        n = m.n_samples
        assert float((answers[k, :n] == y[k, :n]).double().mean()) == pytest.approx(
            res.accuracy, abs=1e-12)


def test_summaries_figure_and_sentences(cache):
    check = TrainedMICheck(**TINY)
    rows = measure_trained_mi(check, "cpu", cache)
    by_n = trained_mi.gap_by_n(rows)
    assert list(by_n.n_per_param) == [0.5, 2.0] and by_n.seeds.eq(2).all()
    top = trained_mi.largest_gap(rows, 0.02)
    assert abs(top["net_gap_per_sample"]) == pytest.approx(rows.gap_per_sample.abs().max())
    assert top["within_per_net"] == bool((rows.gap_per_sample.abs() <= 0.02).all())
    text = trained_mi.findings(rows, 0.02)
    assert f"{top['net_gap_per_sample']:+.4f}" in text
    assert "1x8" in check.describe()
    fig = plots.mi_trained_gap(rows, 0.02)
    assert len(fig.data) == 2 and fig.layout.shapes[0].y1 == 0.02
    assert "gap (mean)" in trained_mi.gap_table(rows, 0.02).to_html()


@pytest.mark.parametrize("field, value, match", [
    ("models", ("16",), "models must name FCDNNs"),
    ("models", (), "models must list"),
    ("n_per_param", (0.0,), "n_per_param must be a number"),
    ("n_per_param", (3.0,), "n_per_param: n_samples=270 is too large for n_in=8"),
    ("n_per_param", (0.5, 0.501), r"n_per_param \(or models\) give N = 45 twice"),
    ("models", ("1x8", "1X8"), "give N = 45 twice for model 1x8"),
    ("seeds", 0, "seeds must be an integer"),
    ("epochs", 0, "epochs must be an integer"),
    ("lr", -1.0, "lr must be a number"),
    ("schedule", "linear", "schedule must be one of"),
    ("tolerance", 0.0, "tolerance must be a number"),
])
def test_bad_config_names_the_parameter(field: str, value, match: str):
    with pytest.raises(ConfigError, match=match):
        TrainedMICheck(**{**TINY, field: value})


def test_lists_from_a_notebook_key_the_same_as_tuples():
    a = TrainedMICheck(**TINY)
    b = TrainedMICheck(**{**TINY, "models": ["1x8"], "n_per_param": [0.5, 2.0]})
    assert a == b and a.unit_config(*a.units()[0][:2]) == b.unit_config(*b.units()[0][:2])


def test_simulation_summary_comes_from_the_data(cache):
    check = mi_check(MICheck(n_samples=(50, 200), accuracies=(0.8, 1.0), repeats=3), cache)
    text = summary(check)
    worst = check.relative_error.abs().groupby(check.n_samples).max()
    assert f"{worst[50]:.4f} bits per sample at N = 50" in text and "N = 200" in text
