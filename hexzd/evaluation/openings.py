"""The openings of paired games: duels, rating matches and `hexzd match`.

Hex's first player has a large advantage, so games come in pairs: each
opening is played twice, colours swapped. With `plies = 1` the openings are
every first move in turn, in an order shuffled by the seed; with more plies,
random moves. Reproducible from the seed (a duel's id), so that a restarted
duel replays the same openings.
"""

import numpy as np

__all__ = ["pair_openings"]


def pair_openings(n: int, plies: int, pairs: range, duel_id: int) -> list[list[int]]:
    """The opening moves of each pair: reproducible from the duel id."""
    nn = n * n
    plies = min(plies, nn // 3)  # never so deep that the opening decides a tiny board
    order = np.random.default_rng(duel_id).permutation(nn)
    result = []
    for pair in pairs:
        if plies == 1:
            result.append([int(order[pair % nn])])
        else:
            rng = np.random.default_rng((duel_id, pair))
            result.append([int(a) for a in rng.choice(nn, size=plies, replace=False)])
    return result
