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
