"""`hexzd bench mcts`: random-rollout MCTS simulations per second against OpenSpiel.

The baseline is OpenSpiel's C++ `MCTSBot` with a `RandomRolloutEvaluator`
(one rollout per leaf), playing a game against itself one move at a time.
hexzd runs the same number of simulations per move in 256 games at once,
with one random fill per leaf. Both run on one core.
"""

from hexzd.benchmarks.timing import compare, print_comparison, single_core
from hexzd.search.mcts import Search

BATCH = 256
SIMS = 200  # simulations per move, for both


def hexzd_search(n: int, sims: int, batch: int = BATCH, seed: int = 0):
    search = Search(batch, n, seed=seed)

    def work() -> float:
        search.run(sims)
        moves, _ = search.choose()
        search.play(moves)
        done = search.roots.done
        if done.any():
            search.new_games(done)
        return batch * sims

    return work


def openspiel_search(n: int, sims: int, seed: int = 0):
    import pyspiel

    game = pyspiel.load_game("hex", {"board_size": n})
    evaluator = pyspiel.RandomRolloutEvaluator(1, seed)
    bot = pyspiel.MCTSBot(game, evaluator, 2.0, sims, 1000, False, seed, False)
    state = [game.new_initial_state()]

    def work() -> float:
        if state[0].is_terminal():
            state[0] = game.new_initial_state()
        state[0].apply_action(bot.step(state[0]))
        return sims

    return work


def run(size: int = 9, seconds: float = 3.0, sims: int = SIMS) -> dict:
    single_core()
    return compare(
        "mcts",
        "simulations/s",
        size,
        seconds,
        hexzd_search(size, sims),
        openspiel_search(size, sims),
        batch=BATCH,
        sims_per_move=sims,
        baseline="OpenSpiel C++ MCTSBot + RandomRolloutEvaluator(1)",
    )


def report(result: dict) -> None:
    n, sims = result["size"], result["sims_per_move"]
    print_comparison(result, f"mcts, {n}x{n}, random rollouts, {sims} simulations per move, one core", "MCTSBot")
