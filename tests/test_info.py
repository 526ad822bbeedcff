import numpy as np
import pytest

from capq_lib.core.info import (
    binary_entropy,
    bits_per_parameter,
    conv_bits_per_parameter,
    empirical_mutual_information,
    mutual_information,
)


def test_perfect_accuracy_stores_n_bits():
    assert mutual_information(1234, 1.0) == 1234


def test_chance_accuracy_stores_nothing():
    assert mutual_information(1234, 0.5) == pytest.approx(0.0, abs=1e-12)


def test_symmetric_about_one_half():
    p = np.linspace(0.0, 0.5, 51)
    np.testing.assert_allclose(mutual_information(100, p), mutual_information(100, 1 - p))


def test_monotone_above_one_half():
    i = mutual_information(100, np.linspace(0.5, 1.0, 201))
    assert np.all(np.diff(i) > 0)


def test_known_values():
    assert binary_entropy(0.5) == pytest.approx(1.0)
    assert binary_entropy(0.11) == pytest.approx(0.4999, abs=1e-3)
    # the paper's LSTM: p = 0.9952 at N = 2^15 gives 3.736 bits per parameter over 8386
    assert bits_per_parameter(mutual_information(2**15, 0.9952), 8386) == pytest.approx(
        3.736, abs=5e-3)


def test_conv_share_of_table1_model_a():
    assert conv_bits_per_parameter(4916.6, 514, 1504) == pytest.approx(2.483, abs=1e-3)


def test_plugin_estimate_of_a_perfect_and_a_useless_predictor():
    y = np.array([0, 1] * 500)
    assert empirical_mutual_information(y, y) == pytest.approx(1000.0)
    assert empirical_mutual_information(y, np.zeros_like(y)) == pytest.approx(0.0)


def test_bad_accuracy_is_refused():
    with pytest.raises(ValueError, match="p must lie in"):
        binary_entropy(1.5)
