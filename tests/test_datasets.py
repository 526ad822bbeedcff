import numpy as np
import pytest

from capq_lib.core.validate import ConfigError
from capq_lib.nets.datasets import memorization_set, random_binary_inputs


@pytest.mark.parametrize("n_in,n", [(12, 4000), (40, 5000)])
def test_inputs_are_distinct_binary(n_in, n):
    x = random_binary_inputs(n, n_in, seed=3)
    assert x.shape == (n, n_in)
    assert set(np.unique(x)) <= {0, 1}
    assert len(np.unique(x, axis=0)) == n


def test_deterministic_in_seed():
    a, b, c = (memorization_set(500, 20, seed=s) for s in (7, 7, 8))
    assert (a.x == b.x).all() and (a.y == b.y).all()
    assert not (a.x == c.x).all()


def test_labels_are_fair_coins():
    y = memorization_set(20000, 32, seed=0).y.float()
    assert set(y.unique().tolist()) == {0.0, 1.0}
    assert abs(y.mean().item() - 0.5) < 0.02


def test_full_enumeration_edge():
    x = random_binary_inputs(2**10 - 1, 10, seed=0)
    assert len(np.unique(x, axis=0)) == 2**10 - 1


@pytest.mark.parametrize("n,n_in", [(1024, 10), (5000, 12), (2**20, 20)])
def test_too_many_samples_for_the_input_size_is_refused(n, n_in):
    with pytest.raises(ConfigError, match=r"n_samples=.*n_in"):
        memorization_set(n, n_in)


def test_images_and_sequences_are_reshaped_distinct_binary_vectors():
    images = memorization_set(300, 1024, seed=2, shape=(1, 32, 32))
    assert images.x.shape == (300, 1, 32, 32)
    assert len(np.unique(images.x.flatten(1).numpy(), axis=0)) == 300
    seqs = memorization_set(300, 160, seed=2, shape=(5, 32))
    assert seqs.x.shape == (300, 5, 32) and set(seqs.x.unique().tolist()) == {0.0, 1.0}
    assert len(np.unique(seqs.x.flatten(1).numpy(), axis=0)) == 300
    with pytest.raises(ConfigError, match="does not hold n_in=100"):
        memorization_set(10, 100, shape=(5, 32))
