"""The network's shape, and its parameter and FLOP counts against a count by hand."""

import pytest
import torch

from hexzd.nn.net import NetSpec, count_flops, count_params


def by_hand(n: int, blocks: int, c: int) -> tuple[int, int]:
    """(parameters, FLOPs) of the architecture in hexzd/nn/net.py's docstring, layer by layer.

    Convolutions have no bias; each batch norm has 2 parameters a channel.
    FLOPs are 2 per multiply-add of convolutions and linear layers.
    """
    cells = n * n
    layers = [  # (parameters, multiply-adds)
        (4 * c * 9 + 2 * c, cells * 4 * c * 9),  # stem
        *[(c * c * 9 + 2 * c, cells * c * c * 9)] * (2 * blocks),  # tower
        (c * 2 + 2 * 2, cells * c * 2),  # policy conv + BN
        (2 * cells * cells + cells, 2 * cells * cells),  # policy linear
        (c + 2, cells * c),  # value conv + BN
        (cells * c + c, cells * c),  # value hidden linear
        (c + 1, c),  # value output
    ]
    return sum(p for p, _ in layers), 2 * sum(m for _, m in layers)


@pytest.mark.parametrize("n,blocks,channels", [(3, 1, 8), (5, 2, 16), (9, 4, 32)])
def test_counts_match_a_count_by_hand(n, blocks, channels):
    model = NetSpec(n, blocks, channels).build()
    assert (count_params(model), count_flops(model)) == by_hand(n, blocks, channels)


def test_outputs_have_the_promised_shapes_and_ranges():
    torch.manual_seed(0)
    model = NetSpec(5, 2, 8).build().eval()
    logits, values = model(torch.rand(7, 4, 5, 5).round())
    assert logits.shape == (7, 25) and values.shape == (7,)
    assert logits.dtype == values.dtype == torch.float32
    assert bool((values.abs() < 1).all())


def test_counting_flops_leaves_the_model_as_it_was():
    model = NetSpec(4, 1, 8).build().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_flops(model)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN stats untouched
