"""The quantizer: levels, step rules, the straight-through estimator, what stays float."""

import pytest
import torch

from capq_lib.core.validate import ConfigError
from capq_lib.engine.population import stack_nets
from capq_lib.engine.quantize import (
    QuantConfig,
    fake_quantize,
    quantize,
    quantize_tensor,
    quantized_names,
    step_size,
    top_level,
)
from capq_lib.engine.train import Recipe, memorize
from capq_lib.nets.datasets import memorization_set
from capq_lib.nets.models import CNNSpec, FCDNNSpec, LSTMSpec, build

SPECS = [FCDNNSpec(width=12, depth=2), CNNSpec("A"), LSTMSpec(units=6)]


def random_weights():
    g = torch.Generator().manual_seed(0)
    return {"gauss": torch.randn(64, 48, generator=g),
            "uniform": torch.rand(3, 3, 8, 4, generator=g) * 2 - 1,
            "heavy": torch.randn(500, generator=g) ** 3}


@pytest.fixture(scope="module")
def trained_fc():
    spec = FCDNNSpec(width=16, depth=2)
    net = build(spec, 0)
    memorize(net, memorization_set(300, 16, 0), Recipe(epochs=60, lr=0.1))
    return net


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 6, 8])
@pytest.mark.parametrize("rule", ["l2", "max"])
def test_at_most_2_to_the_b_minus_1_levels(bits, rule):
    for w in random_weights().values():
        q = quantize_tensor(w, step_size(w, bits, rule), bits)
        limit = 2 if bits == 1 else 2**bits - 1
        assert q.unique().numel() <= limit
        if bits >= 3:  # enough weights to fill most levels: the quantizer is not degenerate
            assert q.unique().numel() >= min(limit, 5)


def test_two_bits_is_ternary_and_top_level():
    w = random_weights()["gauss"]
    s = step_size(w, 2, "l2")
    assert set((quantize_tensor(w, s, 2) / s).round().unique().tolist()) == {-1.0, 0.0, 1.0}
    assert [top_level(b) for b in (1, 2, 3, 8)] == [1, 1, 3, 127]


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("rule", ["l2", "max"])
def test_quantization_is_idempotent(bits, rule):
    for w in random_weights().values():
        s = step_size(w, bits, rule)
        q = quantize_tensor(w, s, bits)
        assert torch.equal(quantize_tensor(q, s, bits), q)
        if rule == "max":  # re-deriving the step from quantized weights changes nothing
            assert torch.allclose(quantize_tensor(q, step_size(q, bits, rule), bits), q)


@pytest.mark.parametrize("bits", [2, 3, 4, 6, 8])
def test_l2_rule_error_is_never_above_max_abs(bits, trained_fc):
    tensors = list(random_weights().values()) + [p.detach() for n, p in
                                                  trained_fc.named_parameters() if p.dim() == 2]
    better = 0
    for w in tensors:
        err = {r: (quantize_tensor(w, step_size(w, bits, r), bits) - w).pow(2).sum().item()
               for r in ("l2", "max")}
        assert err["l2"] <= err["max"] * (1 + 1e-6)
        better += err["l2"] < 0.95 * err["max"]
    if bits <= 4:  # where clipping pays, it is clearly lower for most tensors
        assert better >= len(tensors) // 2


def test_step_per_member_when_stacked():
    w = torch.stack([torch.randn(20, 20), 10 * torch.randn(20, 20)])
    s = step_size(w, 4, "max", lead=1)
    assert s.shape == (2,)
    assert torch.allclose(s, w.abs().flatten(1).amax(1) / 7)


def test_ste_gradient_is_identity_inside_range_and_zero_outside():
    w = torch.linspace(-2, 2, 101, requires_grad=True)
    step = torch.tensor(0.1)
    out = fake_quantize(w, step, 4)  # range +-0.7
    assert torch.equal(out.detach(), quantize_tensor(w.detach(), step, 4))
    (out * torch.arange(101.0)).sum().backward()
    inside = w.detach().abs() <= 0.7
    assert torch.equal(w.grad[inside], torch.arange(101.0)[inside])
    assert torch.all(w.grad[~inside] == 0)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_biases_and_output_layer_stay_bit_identical(spec):
    net = build(spec, 3)
    with torch.no_grad():  # a non-zero read-out, so "unchanged" is a real check
        net.output.weight.normal_()
        net.output.bias.normal_()
    q = quantize(net, QuantConfig(3))
    names = set(quantized_names(net))
    assert names and not any(n.startswith("output.") or n.endswith("bias") for n in names)
    for (name, p), (_, pq) in zip(net.named_parameters(), q.named_parameters(), strict=True):
        if name in names:
            assert not torch.equal(p, pq) and pq.unique().numel() <= 7
        else:
            assert torch.equal(p, pq), name


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_population_fake_quant_matches_quantizing_each_net(spec):
    nets = [build(spec, s) for s in (1, 2)]
    x = torch.rand(2, 16, *spec.input_shape).round()
    model = stack_nets(spec, nets, torch.device("cpu"))
    model.quantize_weights(QuantConfig(4, "l2"))
    with torch.no_grad():
        stacked = model.forward(x)
        for k, net in enumerate(nets):
            torch.testing.assert_close(stacked[k], quantize(net, QuantConfig(4))(x[k]),
                                       atol=1e-5, rtol=1e-5)
            # the member read back keeps its float (shadow) weights
            for p, p0 in zip(model.member(k).parameters(), net.parameters(), strict=True):
                assert torch.equal(p, p0)


@pytest.mark.parametrize("bad", [0, 33, -1, 2.5, "8"])
def test_bits_out_of_range_is_a_clear_error(bad):
    with pytest.raises(ConfigError, match=r"bits must be an integer in \[1, 32\]"):
        QuantConfig(bad)


def test_unknown_step_rule_is_a_clear_error():
    with pytest.raises(ConfigError, match="step_rule must be one of 'l2', 'max'"):
        QuantConfig(4, "mean")
    with pytest.raises(ConfigError, match="step_rule"):
        step_size(torch.ones(3), 4, "median")
