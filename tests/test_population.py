"""The population trainer: member k is the net trained alone, and finished members retire."""

import math

import pytest
import torch

from capq_lib.core.validate import ConfigError
from capq_lib.engine.population import Member, train_members
from capq_lib.engine.train import Recipe, memorize
from capq_lib.experiments.search import FCDNNCapacityStudy
from capq_lib.nets.datasets import memorization_set
from capq_lib.nets.models import CNNSpec, FCDNNSpec, LSTMSpec, build
from capq_lib.nets.transformer import TransformerSpec

SPEC = FCDNNSpec(12, 2)
MEMBERS = [(100, 0.1, 0.9, 0.1, 0, 0), (300, 0.05, 0.8, 0.1, 1, 1),
           (37, 0.05, 0.95, 0.1, 2, 3), (500, 0.02, 0.9, 0.5, 3, 4)]


def with_recipe(shared: Recipe, rows) -> list[Member]:
    """Members (N, lr, momentum, decay, data seed, init seed) on ``shared``'s recipe."""
    return [Member(n, ds, init, shared.with_(lr=lr, momentum=mom, decay_factor=dec))
            for n, lr, mom, dec, ds, init in rows]


def assert_members_match_training_alone(spec, rows, shared):
    """Each member ends where the same net, data, seed and settings end when trained alone."""
    members = with_recipe(shared, rows)
    out = train_members(spec, members, torch.device("cpu"))
    n_in = math.prod(spec.input_shape)
    for m, got in zip(members, out.members, strict=True):
        net = build(spec, m.init_seed)
        data = memorization_set(m.n_samples, n_in, m.data_seed, spec.input_shape)
        alone = memorize(net, data, m.recipe, seed=m.init_seed)
        assert got.epochs_run == alone.epochs_run
        assert got.accuracy == pytest.approx(alone.accuracy, abs=1e-9)
        for (name, a), b in zip(net.named_parameters(), got.model.parameters(), strict=True):
            if m.recipe.optimizer != "adam":
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
                continue
            # Adam divides by the root of the squared gradients, so a weight whose gradient
            # is near zero turns rounding noise (batched and single convolutions sum in
            # another order, which differs between CPUs) into a step of up to lr: nearly
            # every weight must match tightly, and none may differ by more than that step
            # a transformer's key bias shifts every attention logit of a query alike, which
            # the softmax ignores: its gradient is zero in exact arithmetic, so there Adam
            # steps on rounding noise alone (and a little of that reaches the QKV weights)
            if name.endswith("qkv.bias"):
                d = a.shape[0] // 3
                a, b = torch.cat([a[:d], a[2 * d:]]), torch.cat([b[:d], b[2 * d:]])
            close = torch.isclose(a, b, atol=1e-4, rtol=1e-4)
            least = 0.95 if name.endswith("qkv.weight") else 0.999
            assert close.float().mean() >= least, (name, close.float().mean(), a.shape)
            assert (a - b).abs().max() <= m.recipe.lr, (a - b).abs().max()


@pytest.mark.parametrize("schedule", ["cosine", "step"])
def test_each_member_matches_training_it_alone(schedule):
    assert_members_match_training_alone(
        SPEC, MEMBERS, Recipe(epochs=40, schedule=schedule, eval_every=10))


def test_members_that_memorize_stop_costing_work():
    shared = Recipe(epochs=100, eval_every=5)
    members = with_recipe(shared, [(100, 0.05, 0.9, 0.1, 0, 0), (2000, 0.1, 0.9, 0.1, 1, 1)])
    out = train_members(SPEC, members, torch.device("cpu"))
    small, big = out.members
    assert small.accuracy == 1.0 and small.epochs_run < 100
    assert big.epochs_run == 100 and big.accuracy < 1.0
    assert out.model_epochs == small.epochs_run + big.epochs_run


def test_population_size_must_be_positive():
    with pytest.raises(ConfigError, match=r"^population must be an integer in \[1, "):
        FCDNNCapacityStudy(widths=[10], depths=[1], population=0)


def test_adam_members_match_torch_adam_alone():
    shared = Recipe(epochs=30, eval_every=10, optimizer="adam")
    # N = 20 has 7 batches an epoch, the others 8: it idles one step per epoch
    members = [(100, 0.003, 0.9, 0.1, 0, 0), (37, 0.01, 0.8, 0.1, 1, 1),
               (20, 0.01, 0.9, 0.1, 2, 2)]
    assert_members_match_training_alone(SPEC, members, shared)


@pytest.mark.parametrize("spec,optimizer", [(CNNSpec("A"), "sgd"), (CNNSpec("B"), "adam"),
                                            (LSTMSpec(8), "sgd"), (LSTMSpec(6, 4, 3), "adam"),
                                            (TransformerSpec(1, 16), "adam"),
                                            (TransformerSpec(2, 8, 2, n_in=6, steps=3), "sgd")])
def test_cnn_lstm_and_transformer_members_match_training_alone(spec, optimizer):
    assert_members_match_training_alone(
        spec, [(48, 0.01, 0.9, 0.1, 0, 0), (20, 0.02, 0.8, 0.1, 1, 3)],
        Recipe(epochs=4, eval_every=2, optimizer=optimizer))


def test_stopping_keeps_each_groups_most_accurate_member_in_a_race():
    from capq_lib.engine.population import stopping

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
    from capq_lib.engine.population import restart_seed

    shared = Recipe(epochs=40, eval_every=1000, restarts=3, race_at=0.25)
    members = with_recipe(shared, [(400, 0.05, 0.9, 0.1, 5, 7), (300, 0.05, 0.9, 0.1, 6, 8)])
    out = train_members(SPEC, members, torch.device("cpu"))
    assert out.model_epochs == len(members) * (3 * 10 + 30)
    for m, got in zip(members, out.members, strict=True):
        assert got.init_seed in {restart_seed(m.init_seed, j) for j in range(3)}
        assert got.epochs_run == 40
        winner = Member(m.n_samples, m.data_seed, got.init_seed, m.recipe.with_(restarts=1))
        alone = train_members(SPEC, [winner], torch.device("cpu")).members[0]
        assert got.accuracy == pytest.approx(alone.accuracy, abs=1e-9)
    # restart 0 is the member's own initialization
    assert restart_seed(7, 0) == 7 and len({restart_seed(7, j) for j in range(5)}) == 5


def test_members_trained_together_must_share_their_recipe_but_lr_momentum_decay():
    a = Member(50, 0, 0, Recipe(epochs=10, lr=0.1))
    b = Member(50, 1, 1, Recipe(epochs=12, lr=0.2))
    with pytest.raises(ConfigError, match="these differ: epochs"):
        train_members(SPEC, [a, b], torch.device("cpu"))


def test_restarts_are_checked_and_refused_for_one_net():
    with pytest.raises(ConfigError, match="restarts"):
        Recipe(restarts=0)
    with pytest.raises(ConfigError, match="race_at"):
        Recipe(restarts=2, race_at=1.0)
    net = build(SPEC, 0)
    with pytest.raises(ConfigError, match="restarts must be 1"):
        memorize(net, memorization_set(10, SPEC.n_in, 0), Recipe(restarts=2))
    # configs without a race keep the keys they had before races existed
    assert "restarts" not in Recipe().as_dict()
    assert Recipe(restarts=2).as_dict()["restarts"] == 2


@pytest.mark.parametrize("model", ["A", "D"])
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_stacked_cnn_is_each_member_alone(model, k, monkeypatch):
    """Sub-stacks (pairs and a triple here), pairs packed block-diagonally, and evaluation in
    slices compute each member's own CNN.forward, values and gradients."""
    from torch import nn

    from capq_lib.engine import population
    from capq_lib.engine.population import stack_nets

    monkeypatch.setattr(population, "CPU_CNN_SUBSTACK_BYTES", 1)  # sub-stacks of two
    monkeypatch.setattr(population, "CPU_CNN_EVAL_SAMPLES", 3)
    spec = CNNSpec(model)
    nets = [build(spec, s) for s in range(k)]
    torch.manual_seed(k)
    for net in nets:  # a nonzero read-out and biases of both signs
        nn.init.normal_(net.output.weight)
        for conv in net.convs:
            nn.init.normal_(conv.bias, std=0.1)
    stack = stack_nets(spec, nets, torch.device("cpu"))
    x = (torch.rand(k, 7, 1, 32, 32, generator=torch.Generator().manual_seed(k)) < 0.5).float()
    got = stack.forward(x)
    grads = torch.autograd.grad(got.square().sum(), stack.params)
    with torch.no_grad():
        # in slices of 3 samples: oneDNN's rounding depends on the batch size
        torch.testing.assert_close(stack.forward(x), got, atol=1e-5, rtol=1e-5)
    for m, net in enumerate(nets):
        want = net(x[m])
        torch.testing.assert_close(got[m], want, atol=1e-5, rtol=1e-5)
        alone = torch.autograd.grad(want.square().sum(), list(net.parameters()))
        for g, a in zip(grads, alone, strict=True):  # sums with cancellation: atol to scale
            torch.testing.assert_close(g[m], a, atol=1e-5 * float(a.abs().max()), rtol=1e-4)


def test_cnn_substacks_hold_every_member_and_no_lone_one():
    from capq_lib.engine.population import cnn_substack_size, cnn_substacks

    for size in (2, 4):
        for k in range(1, 12):
            sizes = cnn_substacks(k, size)
            assert sum(sizes) == k and (k == 1 or 1 not in sizes)
            assert all(s == size for s in sizes[:-2]) and max(sizes) <= max(size, 3)
    assert cnn_substacks(10, 2) == [2] * 5 and cnn_substacks(10, 4) == [4, 4, 2]
    assert cnn_substacks(5, 4) == [2, 3]
    # the quick book's batches: A in fours, D in pairs
    assert cnn_substack_size(CNNSpec("A"), 69) == 4
    assert cnn_substack_size(CNNSpec("D"), 174) == cnn_substack_size(CNNSpec("A"), 350) == 2


def test_pair_block_diagonal_is_the_grouped_convolution():
    from torch import nn

    from capq_lib.engine.population import pair_block_diagonal

    w = torch.randn(4, 3, 2, 3, 3)  # 4 members, 3 outputs from 2 inputs each
    x = torch.randn(5, 4 * 2, 6, 6)
    grouped = nn.functional.conv2d(x, w.flatten(0, 1), padding=1, groups=4)
    packed = nn.functional.conv2d(x, pair_block_diagonal(w), padding=1, groups=2)
    torch.testing.assert_close(packed, grouped)
    assert pair_block_diagonal(w).shape == (12, 4, 3, 3)


def test_odd_cnn_populations_in_substacks_match_training_alone(monkeypatch):
    """Five D members: a packed pair and a triple (sub-stacks of two). SGD: Adam's update
    of a near-zero gradient is about +-lr whatever its rounding, so stacked and lone D nets
    part by ~2e-4 within 3 epochs (the replaced engine did the same)."""
    from capq_lib.engine import population

    monkeypatch.setattr(population, "CPU_CNN_SUBSTACK_BYTES", 1)
    members = [(24 + 4 * m, 0.01, 0.9, 0.1, m, m) for m in range(5)]
    assert_members_match_training_alone(
        CNNSpec("D"), members, Recipe(epochs=3, eval_every=2, optimizer="sgd"))


def test_retain_freed_memory_is_asked_once():
    from capq_lib.engine.population import retain_freed_memory

    assert retain_freed_memory() in (True, False)
    assert retain_freed_memory() == retain_freed_memory()
