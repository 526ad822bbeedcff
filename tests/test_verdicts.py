"""Every verdict function, driven to each of its outcomes."""

import pytest

from capq_lib.core import verdicts as v
from capq_lib.core.verdicts import Bits, Estimate


def out(verdict):
    return verdict.outcome


def test_estimate_of_replicates_and_its_text():
    e = Estimate.of([2.0, 2.2, 2.4])
    assert e.mean == pytest.approx(2.2) and e.n == 3
    assert e.se == pytest.approx(0.2 / 3 ** 0.5)
    assert e.text() == "2.20 \u00b1 0.23 (2 s.e., 3 seeds)"
    assert Estimate.of([2.2], lower_bound=True).text() == "\u2265 2.20 (1 seed)"
    assert Estimate.of([]).missing and Estimate.of([]).text() == "not measured"


def test_within_agrees_differs_and_is_inconclusive():
    assert out(v.within(Estimate(2.3, 0.02, 3), 2.3, 0.3)) == "agrees"
    assert out(v.within(Estimate(2.9, 0.02, 3), 2.3, 0.3)) == "differs"
    assert out(v.within(Estimate(1.7, 0.02, 3), 2.3, 0.3)) == "differs"
    # the interval straddles the edge of the band
    assert str(v.within(Estimate(2.62, 0.05, 3), 2.3, 0.3)) == \
        "inconclusive (within noise of the tolerance)"
    # a lower bound is never 'differs', whatever its value
    assert str(v.within(Estimate(1.0, 0.01, 3, lower_bound=True), 2.3, 0.3)) == \
        "inconclusive (lower bound)"
    assert str(v.within(Estimate(2.3, float("nan"), 1), 2.3, 0.3)) == "inconclusive (one seed)"
    assert str(v.within(Estimate.of([]), 2.3, 0.3)) == "inconclusive (not measured)"


def test_in_range():
    assert out(v.in_range(Estimate(2.0, 0.01, 3), 1.5, 2.7)) == "agrees"
    assert out(v.in_range(Estimate(3.0, 0.01, 3), 1.5, 2.7)) == "differs"


def test_greater_and_ordered():
    lo, mid, hi = Estimate(2.0, 0.02, 3), Estimate(2.5, 0.02, 3), Estimate(3.5, 0.05, 3)
    assert out(v.greater(mid, lo)) == "agrees"
    assert out(v.greater(lo, mid)) == "differs"
    assert str(v.greater(Estimate(2.01, 0.05, 3), lo)) == \
        "inconclusive (difference within noise)"
    # a lower bound that already exceeds stays ahead; one that trails may catch up
    assert out(v.greater(Estimate(2.5, 0.02, 3, lower_bound=True), lo)) == "agrees"
    assert str(v.greater(Estimate(1.5, 0.02, 3, lower_bound=True), lo)) == \
        "inconclusive (lower bound)"
    assert out(v.ordered([lo, mid, hi])) == "agrees"
    assert out(v.ordered([mid, lo, hi])) == "differs"
    assert out(v.ordered([lo, Estimate(2.0, 0.1, 3), hi])) == "inconclusive"
    assert out(v.ordered([lo])) == "inconclusive"


def test_bits_match_and_at_most():
    assert out(v.bits_match(Bits(6, 12), 6)) == "agrees"
    assert out(v.bits_match(Bits(7, 12), 6)) == "agrees"  # within a bit
    assert out(v.bits_match(Bits(8, 12), 6)) == "differs"
    assert out(v.bits_match(Bits(None, 12), 10)) == "differs"  # lossy at 12 > 10 + 1
    assert out(v.bits_match(Bits(None, 8), 10)) == "inconclusive"
    assert out(v.bits_at_most(Bits(4, 12), 4)) == "agrees"
    assert out(v.bits_at_most(Bits(5, 12), 4)) == "differs"
    assert out(v.bits_at_most(Bits(None, 3), 4)) == "inconclusive"


def test_rises_with_samples_per_parameter():
    b = lambda n: Bits(n, 12)  # noqa: E731
    assert out(v.rises([(0.25, b(3)), (0.5, b(4)), (1.0, b(8))])) == "agrees"
    assert out(v.rises([(0.25, b(3)), (0.5, b(5)), (1.0, b(4))])) == "differs"
    # an unmeasurable width at the top counts as more bits, not as missing
    assert out(v.rises([(0.25, b(3)), (1.0, Bits(None, 12))])) == "agrees"
    assert out(v.rises([(0.25, Bits(None, 12)), (1.0, b(8))])) == "differs"
    assert str(v.rises([(0.25, b(4)), (1.0, b(4))])) == "differs (no change across fractions)"
    assert out(v.rises([(1.0, b(4))])) == "inconclusive"


def test_slope_and_trend_up():
    s = v.slope([1, 2, 3, 1, 2, 3], [4, 6, 8, 4.5, 6.5, 7.5])
    assert s.mean == pytest.approx(1.75) and s.se > 0
    assert out(v.trend_up(s, 0.5)) == "agrees"
    flat = v.slope([1, 2, 3, 1, 2, 3], [6, 6, 6.1, 6.1, 6, 6])
    assert out(v.trend_up(flat, 0.5)) == "differs"
    noisy = v.slope([1, 2, 3, 1, 2, 3], [4, 9, 5, 8, 4, 9])
    assert out(v.trend_up(noisy, 0.5)) == "inconclusive"
    assert out(v.trend_up(v.slope([1, 2], [3, 4]), 0.5)) == "inconclusive"


def test_all_hold():
    assert out(v.all_hold(3, 3)) == "agrees"
    assert out(v.all_hold(2, 3)) == "differs"
    assert str(v.all_hold(0, 0)) == "inconclusive (no net meets the precondition)"


def test_mean_of_estimates_carries_lower_bounds():
    m = v.mean_of([Estimate(2.0, 0.03, 3), Estimate(3.0, 0.04, 3, lower_bound=True)])
    assert m.mean == pytest.approx(2.5) and m.se == pytest.approx(0.025) and m.lower_bound


def test_at_most_and_positive_reach_every_outcome():
    from capq_lib.core.verdicts import Estimate, at_most, positive

    assert at_most(Estimate(0.002, 0.002, 3), 0.01).outcome == "agrees"
    assert at_most(Estimate(0.05, 0.01, 3), 0.01).outcome == "differs"
    assert str(at_most(Estimate(0.01, 0.01, 3), 0.01)) == \
        "inconclusive (within noise of the tolerance)"
    assert str(at_most(Estimate(0.0, float("nan"), 1), 0.01)) == "inconclusive (one seed)"
    # a lower bound already above the limit can only differ; below it says nothing
    assert at_most(Estimate(0.05, 0.01, 3, True), 0.01).outcome == "differs"
    assert str(at_most(Estimate(0.0, 0.01, 3, True, "lossy"), 0.01)) == "inconclusive (lossy)"
    assert positive(Estimate(0.1, 0.01, 3)).outcome == "agrees"
    assert positive(Estimate(-0.1, 0.01, 3)).outcome == "differs"
    assert str(positive(Estimate(0.01, 0.01, 3))) == "inconclusive (difference within noise)"


def test_bits_near_and_rises_between_reach_every_outcome():
    from capq_lib.core.verdicts import Estimate, bits_near, rises_between

    assert bits_near(Estimate.of([6, 6, 6, 6]), 6, 0.5).outcome == "agrees"
    assert bits_near(Estimate.of([7, 7, 7, 7]), 6, 0.5).outcome == "differs"
    assert bits_near(Estimate.of([6, 7, 6, 7]), 6, 0.5).outcome == "inconclusive"
    assert bits_near(Estimate.of([13, 13, 13], lower_bound=True), 10, 0.5).outcome == "differs"
    assert bits_near(Estimate.of([13, 9, 9], lower_bound=True), 10, 0.5).outcome == \
        "inconclusive"
    up = rises_between(Estimate.of([3, 3, 4, 3]), Estimate.of([8, 9, 8, 8]))
    assert up.outcome == "agrees"
    assert str(rises_between(Estimate.of([6, 6, 6]), Estimate.of([6, 6, 6]))) == \
        "differs (no change)"
    assert rises_between(Estimate.of([8, 8, 8]), Estimate.of([6, 6, 6])).outcome == "differs"
    assert str(rises_between(Estimate.of([5, 7, 6]), Estimate.of([6, 8, 7]))) == \
        "inconclusive (difference within noise)"
