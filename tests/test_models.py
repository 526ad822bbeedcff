import pytest
import torch

from capq_lib.models import FCDNNSpec, build_fcdnn, count_parameters
from capq_lib.validate import ConfigError


@pytest.mark.parametrize("width,depth,expected", [
    (32, 1, 1122), (64, 3, 12610), (128, 3, 49794), (256, 4, 263682), (16, 2, 578)])
def test_parameter_counts(width, depth, expected):
    spec = FCDNNSpec(width, depth)
    assert spec.n_params == expected
    assert count_parameters(build_fcdnn(spec)) == expected


def test_he_initialization_scale_and_zero_readout():
    model = build_fcdnn(FCDNNSpec(256, 2), seed=0)
    std = model.hidden[0].weight.std().item()
    assert std == pytest.approx((2 / 256) ** 0.5, rel=0.05)
    assert torch.count_nonzero(model.output.weight) == 0
    assert all(torch.count_nonzero(layer.bias) == 0 for layer in model.hidden)


def test_seeded_init_is_reproducible():
    a, b = build_fcdnn(FCDNNSpec(8, 2), seed=5), build_fcdnn(FCDNNSpec(8, 2), seed=5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("kwargs,name", [
    (dict(width=0, depth=1), "width"), (dict(width=8, depth=-1), "depth"),
    (dict(width=8, depth=0), "depth"), (dict(width=2.5, depth=1), "width")])
def test_bad_architecture_names_the_parameter(kwargs, name):
    with pytest.raises(ConfigError, match=rf"^{name} must be an integer in \[1, \d+\]"):
        FCDNNSpec(**kwargs)
