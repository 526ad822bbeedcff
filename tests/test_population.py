"""The population trainer: member k is the net trained alone, and finished members retire."""

import math

import pytest
import torch

from capq_lib.datasets import memorization_set
from capq_lib.models import CNNSpec, FCDNNSpec, LSTMSpec, build
from capq_lib.population import Member, train_members
from capq_lib.search import FCDNNCapacityStudy
from capq_lib.train import TrainConfig, memorize
from capq_lib.validate import ConfigError

SPEC = FCDNNSpec(12, 2)
MEMBERS = [Member(100, 0.1, 0.9, 0.1, 0, 0), Member(300, 0.05, 0.8, 0.1, 1, 1),
           Member(37, 0.05, 0.95, 0.1, 2, 3), Member(500, 0.02, 0.9, 0.5, 3, 4)]


def assert_members_match_training_alone(spec, members, shared):
    """Each member ends where the same net, data, seed and settings end when trained alone."""
    out = train_members(spec, members, shared, torch.device("cpu"))
    n_in = math.prod(spec.input_shape)
    for m, got in zip(members, out.members, strict=True):
        net = build(spec, m.init_seed)
        data = memorization_set(m.n_samples, n_in, m.data_seed, spec.input_shape)
        alone = memorize(net, data, m.train_config(shared), seed=m.init_seed)
        assert got.epochs_run == alone.epochs_run
        assert got.accuracy == pytest.approx(alone.accuracy, abs=1e-9)
        for a, b in zip(net.parameters(), got.model.parameters(), strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_each_member_matches_training_it_alone(schedule):
    assert_members_match_training_alone(
        SPEC, MEMBERS, TrainConfig(epochs=40, schedule=schedule, eval_every=10))


def test_members_that_memorize_stop_costing_work():
    members = [Member(100, 0.05, 0.9, 0.1, 0, 0), Member(2000, 0.1, 0.9, 0.1, 1, 1)]
    shared = TrainConfig(epochs=100, eval_every=5)
    out = train_members(SPEC, members, shared, torch.device("cpu"))
    small, big = out.members
    assert small.accuracy == 1.0 and small.epochs_run < 100
    assert big.epochs_run == 100 and big.accuracy < 1.0
    assert out.model_epochs == small.epochs_run + big.epochs_run


def test_population_size_must_be_positive():
    with pytest.raises(ConfigError, match=r"^population must be an integer in \[1, "):
        FCDNNCapacityStudy(widths=[10], depths=[1], population=0)


def test_adam_members_match_torch_adam_alone():
    shared = TrainConfig(epochs=30, eval_every=10, optimizer="adam")
    # N = 20 has 7 batches an epoch, the others 8: it idles one step per epoch
    members = [Member(100, 0.003, 0.9, 0.1, 0, 0), Member(37, 0.01, 0.8, 0.1, 1, 1),
               Member(20, 0.01, 0.9, 0.1, 2, 2)]
    assert_members_match_training_alone(SPEC, members, shared)


@pytest.mark.parametrize("spec,optimizer", [(CNNSpec("A"), "sgd"), (CNNSpec("B"), "adam"),
                                            (LSTMSpec(8), "sgd"), (LSTMSpec(6, 4, 3), "adam")])
def test_cnn_and_lstm_members_match_training_alone(spec, optimizer):
    assert_members_match_training_alone(
        spec, [Member(48, 0.01, 0.9, 0.1, 0, 0), Member(20, 0.02, 0.8, 0.1, 1, 3)],
        TrainConfig(epochs=4, eval_every=2, optimizer=optimizer))


def test_stopping_keeps_each_groups_most_accurate_member_in_a_race():
    from capq_lib.population import stopping

    acc, group = [0.7, 0.9, 0.9, 0.6, 0.5], [0, 0, 0, 1, 1]
    assert stopping(acc, group, racing=False) == [False] * 5
    # ties go to the first; a lone group member always trains on
    assert stopping(acc, group, racing=True) == [True, False, True, False, True]
    # a restart that memorized everything ends its whole group, raced or not
    assert stopping([0.8, 1.0, 0.9], [0, 0, 1], racing=False) == [True, True, False]
    # without groups (each member its own), only members at accuracy 1 stop
    assert stopping([1.0, 0.9], [0, 1], racing=True) == [True, False]


def test_restarts_race_and_the_winner_is_the_net_trained_alone():
    """Three initializations per net: the losers stop at race_at of the epochs (the work
    counts it), and each net's result is its winning initialization trained alone."""
    from capq_lib.population import restart_seed

    members = [Member(400, 0.05, 0.9, 0.1, 5, 7), Member(300, 0.05, 0.9, 0.1, 6, 8)]
    shared = TrainConfig(epochs=40, eval_every=1000, restarts=3, race_at=0.25)
    out = train_members(SPEC, members, shared, torch.device("cpu"))
    assert out.model_epochs == len(members) * (3 * 10 + 30)
    for m, got in zip(members, out.members, strict=True):
        assert got.init_seed in {restart_seed(m.init_seed, j) for j in range(3)}
        assert got.epochs_run == 40
        winner = Member(m.n_samples, m.lr, m.momentum, m.decay_factor, m.data_seed,
                        got.init_seed)
        alone = train_members(SPEC, [winner], TrainConfig(epochs=40, eval_every=1000),
                              torch.device("cpu")).members[0]
        assert got.accuracy == pytest.approx(alone.accuracy, abs=1e-9)
    # restart 0 is the member's own initialization
    assert restart_seed(7, 0) == 7 and len({restart_seed(7, j) for j in range(5)}) == 5


def test_restarts_are_checked_and_refused_for_one_net():
    with pytest.raises(ConfigError, match="restarts"):
        TrainConfig(restarts=0)
    with pytest.raises(ConfigError, match="race_at"):
        TrainConfig(restarts=2, race_at=1.0)
    net = build(SPEC, 0)
    with pytest.raises(ConfigError, match="restarts must be 1"):
        memorize(net, memorization_set(10, SPEC.n_in, 0), TrainConfig(restarts=2))
    # configs without a race keep the keys they had before races existed
    assert "restarts" not in TrainConfig().as_dict()
    assert TrainConfig(restarts=2).as_dict()["restarts"] == 2
