import pytest
import torch

from capq_lib.core.validate import ConfigError
from capq_lib.nets.models import FCDNNSpec, build_fcdnn, count_parameters


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


@pytest.mark.parametrize("model,params,conv", [
    ("A", 2018, 1504), ("B", 4642, 4128), ("C", 13070, 12556), ("D", 5070, 4556),
    ("E", 19066, 18040), ("F", 31218, 30192)])
def test_table1_parameter_counts(model, params, conv):
    from capq_lib.nets.models import CNNSpec, build_cnn

    spec = CNNSpec(model)
    assert (spec.n_params, spec.n_params_conv) == (params, conv)
    net = build_cnn(spec)
    assert count_parameters(net) == params
    assert sum(p.numel() for p in net.convs.parameters()) == conv
    assert net(torch.zeros(3, 1, 32, 32)).shape == (3, 2)


def test_table1_pooling_halves_the_map_three_times():
    from capq_lib.nets.models import same_max_pool

    x = torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32)
    sizes = []
    for _ in range(3):
        x = same_max_pool(x)
        sizes.append(x.shape[-1])
    assert sizes == [16, 8, 4]
    # 'same' as TensorFlow: the window at (0, 0) covers rows and columns 0-2
    assert same_max_pool(torch.arange(16.0).view(1, 1, 4, 4))[0, 0, 0, 0] == 10.0


def _tf_reference_forward(net, x):
    """conv -> ReLU per layer, then pad with -inf at the bottom/right and 3x3/2 max pool."""
    from torch import nn

    h, i = x, 0
    for n in net.spec.blocks():
        for _ in range(n):
            h = torch.relu(net.convs[i](h))
            i += 1
        h = nn.functional.max_pool2d(nn.functional.pad(h, (0, 1, 0, 1), value=-torch.inf), 3, 2)
    return net.output(h.flatten(1))


@pytest.mark.parametrize("model", ["A", "D"])
def test_cnn_forward_is_conv_relu_then_tf_same_pool(model):
    """The forward pass (pool without a padded copy, the block's last ReLU after the pool)
    computes exactly the reference definition, values and gradients."""
    from torch import nn

    from capq_lib.nets.models import CNNSpec, build_cnn

    net = build_cnn(CNNSpec(model), seed=3)
    nn.init.normal_(net.output.weight)
    for conv in net.convs:  # biases of both signs, so ReLUs cut inside the pooled windows
        nn.init.normal_(conv.bias)
    x = torch.randn(5, 1, 32, 32, requires_grad=True)
    got, want = net(x), _tf_reference_forward(net, x)
    assert torch.equal(got, want)
    g_got = torch.autograd.grad(got.sum(), x)[0]
    g_want = torch.autograd.grad(want.sum(), x)[0]
    assert torch.allclose(g_got, g_want, atol=1e-6)


@pytest.mark.parametrize("units,expected", [(32, 8386), (16, 3170), (8, 1330)])
def test_lstm_parameter_counts_one_bias_per_gate(units, expected):
    from capq_lib.nets.models import LSTMSpec, build_lstm

    spec = LSTMSpec(units)
    assert spec.n_params == expected == count_parameters(build_lstm(spec))
    # nn.LSTM keeps two biases per gate: 4 * units more
    ref = torch.nn.LSTM(32, units)
    assert count_parameters(ref) + 2 * units + 2 == expected + 4 * units


def test_lstm_cell_matches_torch_lstm():
    from capq_lib.nets.models import LSTMSpec, build_lstm

    net = build_lstm(LSTMSpec(6, 4, 3), seed=1)
    ref = torch.nn.LSTM(4, 6, batch_first=True)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(net.w_ih)
        ref.weight_hh_l0.copy_(net.w_hh)
        ref.bias_ih_l0.copy_(net.bias)
        ref.bias_hh_l0.zero_()
    x = torch.rand(5, 3, 4)
    h = ref(x)[0][:, -1]
    torch.testing.assert_close(net(x), net.output(h))


@pytest.mark.parametrize("kwargs,name", [(dict(units=0), "units"), (dict(steps=0), "steps")])
def test_bad_lstm_names_the_parameter(kwargs, name):
    from capq_lib.nets.models import LSTMSpec

    with pytest.raises(ConfigError, match=rf"^{name} must be an integer"):
        LSTMSpec(**kwargs)


def test_unknown_cnn_names_the_parameter():
    from capq_lib.nets.models import CNNSpec

    with pytest.raises(ConfigError, match=r"^model must be one of 'A', 'B'"):
        CNNSpec("G")


@pytest.mark.parametrize("model,floats", [("A", 4 * 32 * 32 + 8 * 16 * 16 + 16 * 8 * 8),
                                          ("D", 2 * (4 * 32 * 32 + 8 * 16 * 16 + 16 * 8 * 8))])
def test_conv_outputs_count_every_convolution_output(model, floats):
    from capq_lib.nets.models import CNNSpec, build_cnn

    spec, seen = CNNSpec(model), []
    net = build_cnn(spec)
    for conv in net.convs:
        conv.register_forward_hook(lambda m, i, out: seen.append(out[0].numel()))
    net(torch.zeros(1, 1, 32, 32))
    assert spec.conv_outputs == sum(seen) == floats
