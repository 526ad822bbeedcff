import pytest

from capq_lib.core.validate import ConfigError
from capq_lib.engine.train import Recipe, learning_rate, memorize
from capq_lib.nets.datasets import memorization_set
from capq_lib.nets.models import FCDNNSpec, build_fcdnn


def test_a_tiny_set_is_memorized_and_training_stops_early():
    data = memorization_set(64, 16, seed=0)
    config = Recipe(epochs=2000, lr=0.1, eval_every=10)
    out = memorize(build_fcdnn(FCDNNSpec(16, 1), seed=0), data, config)
    assert out.accuracy == 1.0
    assert out.epochs_run < config.epochs  # stopped once everything was memorized


def test_an_over_full_net_cannot_memorize():
    data = memorization_set(3000, 16, seed=0)  # ~10 samples per parameter of a 1x16 net
    out = memorize(build_fcdnn(FCDNNSpec(16, 1)), data, Recipe(epochs=50))
    assert 0.5 < out.accuracy < 0.9
    assert out.epochs_run == 50


def test_training_is_deterministic():
    data = memorization_set(300, 12, seed=1)
    a, b = (memorize(build_fcdnn(FCDNNSpec(12, 1), seed=2), data, Recipe(epochs=40), seed=2)
            for _ in range(2))
    assert a.accuracy == b.accuracy and a.loss == b.loss


def test_schedules():
    c = Recipe(lr=0.2, schedule="cosine")
    assert learning_rate(c, 0, 100) == pytest.approx(0.2)
    assert learning_rate(c, 50, 100) == pytest.approx(0.1)
    s = Recipe(lr=0.2, schedule="step", decay_factor=0.5)
    assert [learning_rate(s, k, 100) for k in (0, 49, 50, 75)] == pytest.approx(
        [0.2, 0.2, 0.1, 0.05])


@pytest.mark.parametrize("kwargs,name", [
    (dict(epochs=0), "epochs"), (dict(lr=0.0), "lr"), (dict(momentum=1.5), "momentum"),
    (dict(schedule="linear"), "schedule"), (dict(batches_per_epoch=0), "batches_per_epoch")])
def test_bad_training_config_names_the_parameter(kwargs, name):
    with pytest.raises(ConfigError, match=rf"^{name} must be"):
        Recipe(**kwargs)


def test_epoch_order_is_a_seeded_permutation_of_each_members_samples():
    import torch

    from capq_lib.engine.train import epoch_order

    seeds, sizes = torch.tensor([3, 4, 3]), torch.tensor([50, 50, 20])
    order = epoch_order(seeds, 1, sizes, 50)
    for k, n in enumerate(sizes.tolist()):
        assert sorted(order[k, :n].tolist()) == list(range(n))
        assert order[k, n:].tolist() == list(range(n, 50))  # padding last, in place
    assert not torch.equal(order[0], order[1])  # another seed, another order
    assert torch.equal(order, epoch_order(seeds, 1, sizes, 50))
    assert not torch.equal(order[0], epoch_order(seeds, 2, sizes, 50)[0])  # another epoch
    # alone, a member draws the order it gets in a population
    assert torch.equal(epoch_order(seeds[2:], 1, sizes[2:], 20)[0], order[2, :20])
