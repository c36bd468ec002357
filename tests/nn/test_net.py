"""The network's shape, its parameter and FLOP counts against a count by hand, and its compact input."""

import numpy as np
import pytest
import torch

from hexzd.config import parse
from hexzd.game.rules import BLACK, EMPTY, WHITE, Games
from hexzd.nn.net import NetSpec, count_flops, count_params, planes
from hexzd.search.mcts import Search


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


# -- the compact input: codes written by the kernels, planes built by torch


def random_games(n: int, count: int, seed: int) -> Games:
    """Random legal positions with the swap rule on: a quarter at ply 1 (swap available), swaps taken often."""
    rng = np.random.default_rng(seed)
    games = Games.new(count, n, swap=True)
    stop = rng.integers(0, n * n, count)
    stop[: count // 4] = 1
    for _ in range(n * n):
        legal = games.legal()
        actions = []
        for b in range(count):
            if games.ply[b] >= stop[b] or games.done[b]:
                actions.append(-1)
            elif legal[b, n * n] and rng.random() < 0.5:
                actions.append(n * n)
            else:
                actions.append(int(rng.choice(np.flatnonzero(legal[b, : n * n]))))
        games.play(actions)
    return games


def reference_codes(games: Games, b: int) -> list[int]:
    """The layout of native/board.py codes_one, read off the board in plain Python."""
    n, me = games.n, int(games.to_play[b])
    out = []
    for r in range(n):
        for c in range(n):
            # The mover sees the board with their own edges top and bottom: White's is transposed.
            stone = int(games.board[b, r * n + c] if me == BLACK else games.board[b, c * n + r])
            out.append(0 if stone == EMPTY else 1 if stone == me else 2)
    out.append(1 if games.swap and games.ply[b] == 1 else 0)
    return out


def reference_planes(games: Games, b: int) -> np.ndarray:
    """The 4 float planes of hexzd/nn/net.py's docstring, in plain Python."""
    n, me = games.n, int(games.to_play[b])
    out = np.zeros((4, n, n), np.float32)
    for r in range(n):
        for c in range(n):
            stone = int(games.board[b, r * n + c] if me == BLACK else games.board[b, c * n + r])
            out[0, r, c] = stone == me
            out[1, r, c] = stone not in (EMPTY, me)
            out[2, r, c] = 1
            out[3, r, c] = games.swap and games.ply[b] == 1
    return out


@pytest.mark.parametrize("n", [2, 5, 9])
def test_codes_and_their_planes_match_a_plain_python_encoder(n):
    games = random_games(n, 64, seed=n)
    assert (games.ply == 1).any() and (games.to_play == WHITE).any() and (games.to_play == BLACK).any()
    codes = games.codes()
    assert codes.dtype == np.uint8 and codes.shape == (64, n * n + 1)
    assert codes.tolist() == [reference_codes(games, b) for b in range(64)]
    assert codes[:, -1].any() and not codes[:, -1].all()  # swap available in some positions only
    expected = np.stack([reference_planes(games, b) for b in range(64)])
    assert np.array_equal(planes(torch.from_numpy(codes), n).numpy(), expected)
    assert np.array_equal(games.features(), expected)  # the trainer's planes: the same input
    half = planes(torch.from_numpy(codes), n, torch.float16)
    assert half.dtype == torch.float16 and torch.equal(half.float(), torch.from_numpy(expected))


def test_a_net_on_codes_gives_exactly_its_outputs_on_the_old_planes():
    n = 5
    games = random_games(n, 40, seed=1)
    torch.manual_seed(0)
    model = NetSpec(n, 2, 8).build().eval()
    old = torch.from_numpy(np.stack([reference_planes(games, b) for b in range(40)]))
    with torch.no_grad():
        a = model(old)
        b = model(planes(torch.from_numpy(games.codes()), n).contiguous())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_the_search_sends_its_leaves_codes():
    n = 4
    search = Search(6, n, swap=True, seed=3)
    search.play([5, 5, 5, -1, -1, -1])  # three games at ply 1: swap available at their leaves' roots
    search.begin_move(4)
    leaves = search._leaves
    for _ in range(4):
        search.select()
        assert search.codes.dtype == np.uint8 and search.codes.shape == (6, n * n + 1)
        assert search.codes.tolist() == [reference_codes(leaves, b) for b in range(6)]
        search.backup(np.zeros((6, n * n), np.float32), np.zeros(6, np.float32))


@pytest.mark.parametrize("n", [5, 9, 11, 13])
def test_the_auto_tower_carries_a_corner_to_the_opposite_corner_and_one_block_less_does_not(n):
    """config.toml's rule for blocks: each cell's tower features see the whole board (Hex is
    won by a connection from edge to edge), checked by the gradient of a real tower."""
    blocks = parse(f"[game]\nboard_size = {n}\n").model.blocks

    def reaches(blocks: int) -> bool:
        torch.manual_seed(0)
        net = NetSpec(n, blocks, 8).build().eval()
        x = torch.randn(1, 4, n, n, requires_grad=True)
        net.tower(net.stem(x))[0, :, 0, 0].sum().backward()
        return bool(x.grad[0, :, n - 1, n - 1].abs().sum() > 0)

    assert reaches(blocks)
    assert blocks == 4 or not reaches(blocks - 1), "the fewest blocks that reach, above the floor of 4"
