"""`hexzd bench engine`: random games per second, hexzd against OpenSpiel.

Both play uniformly random games move by move, checking for a winner after
every move. hexzd steps 256 games at once through its kernels; OpenSpiel
plays one game at a time through its Python API, the way a Python program
uses it. Both run on one core.
"""

import numpy as np

from hexzd.benchmarks.timing import compare, print_comparison, single_core
from hexzd.game.rules import Games
from hexzd.native import board as kernels
from hexzd.native.rng import seeds

BATCH = 256


def hexzd_games(n: int, batch: int = BATCH, seed: int = 0):
    games = Games.new(batch, n)
    rng = seeds(batch, seed)

    def work() -> float:
        games.reset()
        while True:
            moves = kernels.random_moves(games.board, games.winner, rng)
            if moves.max() < 0:
                return batch
            kernels.play(*games.arrays, moves)

    return work


def openspiel_games(n: int, seed: int = 0):
    import pyspiel

    game = pyspiel.load_game("hex", {"board_size": n})
    rng = np.random.default_rng(seed)

    def work() -> float:
        state = game.new_initial_state()
        while not state.is_terminal():
            legal = state.legal_actions()
            state.apply_action(legal[rng.integers(len(legal))])
        return 1

    return work


def run(size: int = 9, seconds: float = 3.0) -> dict:
    single_core()
    return compare(
        "engine",
        "games/s",
        size,
        seconds,
        hexzd_games(size),
        openspiel_games(size),
        batch=BATCH,
        baseline="OpenSpiel hex (Python API), one game at a time",
    )


def report(result: dict) -> None:
    n = result["size"]
    print_comparison(result, f"engine, {n}x{n}, random games move by move, one core", "OpenSpiel")
