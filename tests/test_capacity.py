import pytest

from capq_lib.core.info import mutual_information
from capq_lib.core.validate import ConfigError
from capq_lib.experiments.capacity import measure_capacity
from capq_lib.experiments.search import FCDNNCapacityStudy

TINY = dict(widths=[12], depths=[1], stage1_n_per_param=[0.5, 1.0, 2.0, 3.0, 5.0],
            stage2_lrs=[0.1, 0.3], stage2_momenta=[0.9], stage2_n_factors=[1.0],
            stage3_trials=2, epochs=600, population=8, profile="test")


def test_capacity_search_finds_a_bracketed_maximum_and_replicates_it(cache):
    result = measure_capacity(FCDNNCapacityStudy(**TINY), device="cpu", cache=cache,
                            progress=False)
    row = result.summary.iloc[0]
    search = result.trials[result.trials.stage < 5]
    ns = sorted(search.n_samples)
    assert ns[0] < row.n_at_max < ns[-1] and row.bracketed
    # the search's maximum really is the largest Eq. (1) value over every search trial
    assert row.capacity_bits_search_max == pytest.approx(search.mutual_info.max())
    assert row.capacity_bits_search_max == pytest.approx(
        mutual_information(row.n_at_max, row.p_at_max))
    # the capacity reported is the mean of three fresh trainings of the winner
    reps = result.trials[result.trials.stage == 5]
    assert row.replicates == len(reps) == 3 and (reps.n_samples == row.n_at_max).all()
    assert row.capacity_bits == pytest.approx(reps.mutual_info.mean())
    assert row.capacity_bits_sd == pytest.approx(reps.mutual_info.std(ddof=1))
    assert row.bits_per_param == pytest.approx(row.capacity_bits / row.params)
    assert row.n_grid_max == ns[-1] and 0.5 <= row.p_at_n_grid_max < 1
    # over-parameterized end: memorized; under-parameterized end: far from it
    grid = result.curve.sort_values("n_samples")
    assert grid.iloc[0].accuracy == 1.0 and grid.iloc[-1].accuracy < 0.95
    assert 0.5 < row.bits_per_param < 4.0


def test_second_run_trains_nothing_and_records_the_summary(cache):
    study = FCDNNCapacityStudy(**{**TINY, "epochs": 30, "stage3_trials": 1,
                                  "bracket_trials": 0})
    first = measure_capacity(study, device="cpu", cache=cache, progress=False)
    again = measure_capacity(study, device="cpu", cache=cache, progress=False)
    assert first.trials.sort_values("number").equals(again.trials.sort_values("number"))
    assert first.summary.capacity_bits.tolist() == again.summary.capacity_bits.tolist()
    records = cache.records("fcdnn-capacity")
    assert {r["result"]["profile"] for r in records} == {"test"}
    assert records[-1]["result"]["trials"] == 5 + 2 + 1 + 3  # grid, stage 2, stage 3, replicates


def test_an_impossible_grid_is_refused_before_training(cache):
    with pytest.raises(ConfigError, match=r"n_samples=\d+ is too large for n_in=6"):
        FCDNNCapacityStudy(widths=[6], depths=[1], stage1_n_per_param=[4.0])
    assert not cache.root.exists()


@pytest.mark.parametrize("kwargs,name", [
    (dict(widths=[0]), "widths"), (dict(depths=[-1]), "depths"), (dict(widths=[]), "widths"),
    (dict(stage1_n_per_param=[0]), "stage1_n_per_param"), (dict(stage3_trials=-1),
                                                           "stage3_trials"),
    (dict(lr_range=[0.5, 0.1]), "lr_range"), (dict(stage2_lrs=[5.0]), "stage2_lrs")])
def test_bad_study_names_the_parameter(kwargs, name):
    with pytest.raises(ConfigError, match=rf"^{name} must"):
        FCDNNCapacityStudy(**kwargs)


def test_unknown_study_parameter_is_refused():
    with pytest.raises(ConfigError, match=r"unknown study parameter\(s\) \['widht'\]"):
        FCDNNCapacityStudy.from_parameters(widht=[3])


def test_epochs_per_model_must_name_every_model():
    from capq_lib.experiments.search import CNNCapacityStudy

    study = CNNCapacityStudy(models=["A", "D"], epochs={"A": 30, "D": 20})
    assert study.recipe("A").epochs == 30 and study.recipe("D").epochs == 20
    with pytest.raises(ConfigError, match=r"^epochs must be an integer or give every model"):
        CNNCapacityStudy(models=["A", "D"], epochs={"A": 30})


def by_length(caps, sd=10.0, seeds=3):
    """capacity_by_length rows of one CNN: {factor: capacity in bits}."""
    import pandas as pd

    return pd.DataFrame([{"model": "A", "params": 2018, "params_conv": 1504, "params_fc": 514,
                          "factor": f, "epochs": int(300 * f), "n_samples": 4000,
                          "capacity_bits": c, "capacity_bits_sd": sd, "seeds": seeds, "p": 0.99}
                         for f, c in caps.items()])


def test_capacity_still_growing_with_training_length_is_not_converged():
    from capq_lib.experiments.capacity import converged, length_findings

    assert converged(by_length({0.5: 3000, 1: 3500, 2: 4000}))["A"]["converged"] is False
    assert converged(by_length({0.5: 3000, 1: 3500, 2: 3505}))["A"]["converged"] is True
    # without a longer training, a rise into the chapter's length means it was still growing
    rising = converged(by_length({0.25: 2500, 0.5: 3000, 1: 3500}))["A"]
    assert rising["converged"] is False and (rising["from_factor"], rising["to_factor"]) == \
        (0.5, 1.0)
    assert converged(by_length({0.5: 3490, 1: 3500}))["A"]["converged"] is True
    text = length_findings(by_length({0.5: 3000, 1: 3500, 2: 4000}))
    # the change is of the value shown (conv bits per parameter 1.54 -> 1.87, +22 %), not of C
    assert "had not converged" in text and "changed by +22 %" in text
    assert "no growth is resolved" in length_findings(by_length({0.5: 3490, 1: 3500}))


def test_bracketing_n_is_the_peak_and_the_next_lower_point_above():
    import pandas as pd

    from capq_lib.experiments.capacity import bracketing_n

    curve = pd.DataFrame({"n_samples": [100, 200, 300, 400], "mutual_info": [100, 190, 150,
                                                                             120]})
    assert bracketing_n(curve, 200) == [200, 300]
    assert bracketing_n(curve, 400) == [400]


def test_every_training_length_is_in_the_cache_for_the_scorecard(cache):
    """The chapter's own length (factor 1) reuses the replicates without training; its rows
    are recorded too, so that the intro's scorecard judges convergence as the page does."""
    from capq_lib.experiments.capacity import (
        capacity_by_length,
        converged,
        measure_training_length,
    )
    from capq_lib.report.scorecard import training_lengths

    study = FCDNNCapacityStudy(**{**TINY, "epochs": 30, "stage3_trials": 1,
                                  "bracket_trials": 0})
    result = measure_capacity(study, device="cpu", cache=cache, progress=False)
    page = measure_training_length(study, result, [0.5, 1], 0, device="cpu", cache=cache,
                                   progress=False)
    cached = training_lengths("test", cache)
    assert sorted(cached.factor.unique()) == sorted(page.factor.unique()) == [0.5, 1.0]
    assert len(cached) == len(page)
    assert converged(capacity_by_length(cached)) == converged(capacity_by_length(page))
