"""`hexzd bench engine`: uniformly random Hex games played to the end, per second.

Every side plays games of the same kind: from the empty board, Black first,
no swap move (OpenSpiel's hex has none), each move a uniformly random empty
cell, until a player connects. All run on one core. What each side does:

hexzd, 256 games at once, two numba kernel calls per move for the batch:
    `random_moves` counts each running game's empty cells and walks to the
    k-th, k drawn uniformly (xorshift*): O(n^2) per game and move.
    `play` puts the stone, joins it in a union-find forest to its
    same-coloured neighbours and to the board edges it touches, and checks
    for a winner after every move: two `find`s, the mover's two edge nodes.
    A game that has ended is skipped until the batch's longest game ends.

OpenSpiel, C++ (the headline baseline): `RandomRolloutEvaluator`, its
    fastest honest way to play whole random games. Per game it clones the
    state; per move it calls IsTerminal, IsChanceNode, LegalActions (a new
    vector of the empty cells: O(n^2)), absl::Uniform for the index and
    ApplyAction (the history grows by the move). OpenSpiel also checks for a
    winner after every move, but not with union-find: every stone carries
    which of its player's edges its group touches; the new stone reads its
    six neighbours' labels, and wins when it joins both edges; when it joins
    one edge, a flood fill labels the rest of its group. Python reaches the
    evaluator only through `MCTSBot` (pyspiel 2.0.2 binds no `evaluate`): with one
    simulation, `mcts_search(empty board)` makes a root node, clones the state
    once and evaluates it with ROLLOUTS whole games. Measured on 9x9, 1, 4,
    16, 64, 256 and 1024 rollouts per call all gave about 38k games/s, equal
    within noise, so the per-call cost is negligible at ROLLOUTS. Its other C++
    way, `evaluate_bots` with two uniform random bots, gave 25k games/s.

OpenSpiel, Python loop (second row): one game per call through the Python
    API, as cheap as honest: `random.Random.choice(state.legal_actions())`
    (no numpy call per move) and `apply_action`, until `legal_actions()` is
    empty, which it is exactly when the game is over (no `is_terminal` call).
"""

import random

from hexzd.benchmarks.timing import compare_rows, print_rows, single_core
from hexzd.game.rules import Games
from hexzd.native import board as kernels
from hexzd.native.rng import seeds

BATCH = 256
ROLLOUTS = 64  # games per C++ call; the rate is flat from 1 to 1024 (see above)


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


def rollout_bot(n: int, rollouts: int = ROLLOUTS, seed: int = 0):
    """(bot, game): an MCTSBot whose one simulation is `rollouts` C++ random games from the state searched."""
    import pyspiel

    game = pyspiel.load_game("hex", {"board_size": n})
    evaluator = pyspiel.RandomRolloutEvaluator(rollouts, seed)
    # game, evaluator, uct_c, max_simulations, max_memory_mb, solve, seed, verbose
    return pyspiel.MCTSBot(game, evaluator, 2.0, 1, 1000, False, seed, False), game


def openspiel_rollouts(n: int, rollouts: int = ROLLOUTS, seed: int = 0):
    bot, game = rollout_bot(n, rollouts, seed)
    empty = game.new_initial_state()

    def work() -> float:
        bot.mcts_search(empty)  # the evaluator clones `empty`: it stays empty
        return rollouts

    return work


def openspiel_python(n: int, seed: int = 0):
    import pyspiel

    game = pyspiel.load_game("hex", {"board_size": n})
    choice = random.Random(seed).choice

    def work() -> float:
        state = game.new_initial_state()
        legal_actions, apply_action = state.legal_actions, state.apply_action
        while legal := legal_actions():
            apply_action(choice(legal))
        return 1

    return work


def run(size: int = 9, seconds: float = 3.0) -> dict:
    single_core()
    return compare_rows(
        "engine",
        "games/s",
        size,
        seconds,
        hexzd_games(size),
        [
            (f"OpenSpiel C++ RandomRolloutEvaluator({ROLLOUTS})", openspiel_rollouts(size)),
            ("OpenSpiel Python loop, random.choice", openspiel_python(size)),
        ],
        batch=BATCH,
    )


def report(result: dict) -> None:
    n = result["size"]
    print_rows(
        result,
        f"engine, {n}x{n}, uniformly random games to the end, one core",
        [
            "all three check for a winner after every move: hexzd by union-find,",
            "OpenSpiel by edge labels on its stones and a flood fill when a group reaches an edge",
        ],
    )
