import pytest

from capq_lib.capacity import FCDNNCapacityStudy, fcdnn_capacity
from capq_lib.info import mutual_information
from capq_lib.validate import ConfigError

TINY = dict(widths=[12], depths=[1], n_per_param=[0.5, 1.0, 2.0, 3.0, 5.0], lrs=[0.1, 0.3],
            epochs=600, profile="test")


def test_capacity_search_finds_an_interior_maximum(cache):
    result = fcdnn_capacity(FCDNNCapacityStudy(**TINY), device="cpu", cache=cache,
                            progress=False)
    row = result.summary.iloc[0]
    ns = sorted(result.curve.n_samples)
    assert ns[0] < row.n_at_max < ns[-1]
    # the maximum really is the largest Eq. (1) value over the swept N
    assert row.capacity_bits == pytest.approx(result.curve.mutual_info.max())
    assert row.capacity_bits == pytest.approx(mutual_information(row.n_at_max, row.p_at_max))
    # over-parameterized end: memorized; under-parameterized end: far from it
    first, last = result.curve.iloc[0], result.curve.iloc[-1]
    assert first.accuracy == 1.0 and last.accuracy < 0.95
    assert 0.5 < row.bits_per_param < 4.0


def test_second_run_is_served_from_the_cache(cache):
    study = FCDNNCapacityStudy(**{**TINY, "n_per_param": [0.5, 1.0], "lrs": [0.3]})
    first = fcdnn_capacity(study, device="cpu", cache=cache, progress=False)
    again = fcdnn_capacity(study, device="cpu", cache=cache, progress=False)
    assert not first.trials.cached.any() and again.trials.cached.all()
    assert first.summary.capacity_bits.tolist() == again.summary.capacity_bits.tolist()
    records = cache.records("fcdnn-capacity")
    assert {r["result"]["profile"] for r in records} == {"test"}


def test_an_impossible_grid_is_refused_before_training(cache):
    with pytest.raises(ConfigError, match=r"n_samples=\d+ is too large for n_in=6"):
        FCDNNCapacityStudy(widths=[6], depths=[1], n_per_param=[4.0])
    assert not cache.root.exists()


@pytest.mark.parametrize("kwargs,name", [
    (dict(widths=[0]), "widths"), (dict(depths=[-1]), "depths"), (dict(widths=[]), "widths"),
    (dict(n_per_param=[0]), "n_per_param")])
def test_bad_study_names_the_parameter(kwargs, name):
    with pytest.raises(ConfigError, match=rf"^{name} must"):
        FCDNNCapacityStudy(**kwargs)
