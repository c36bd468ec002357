"""`hexzd bench mcts`: random-rollout MCTS simulations per second against OpenSpiel's C++ MCTSBot.

Both sides play games against themselves from the empty board (no swap
move), SIMS simulations per move, one random rollout per leaf, on one core.
This is not the same work; what each side does, and what differs, follows.

Made alike here: hexzd searches without root noise and plays the most
visited move (explore=False; MCTSBot adds no noise, and plays a proven win
or else its most visited move), and starts each move's search from a fresh
tree (reuse_tree=False; MCTSBot's `MCTSearch` builds a new root every move).
The simulations counted are those run: SIMS per move for hexzd, the root's
visit count for MCTSBot, which stops early when its root is solved
(solve=True) or has one legal move.

hexzd (`Search.run` -> native/tree.py `search_rollouts`): one kernel call
per move for 256 trees, each tree's simulations back to back. A simulation
    descends by PUCT (c_puct 1.5) with uniform priors; an unvisited move is
        worth its parent's Q minus 0.25 (FPU), and only the moves tried so far
        and the first untried one are scored, since untried moves score alike;
    places the descent's moves on a copy of the root's board with no
        connection tracking, then one flood fill from the last stone tells
        whether the leaf is a finished game;
    expands the new leaf at once (`_expand`: an edge per legal move) and,
        when the player to move has n - 1 stones or more, finds a move that
        wins at once (`_winning_cells`, two flood fills): the leaf is then a
        proven win and gets no rollout;
    proves wins and losses (MCTS-Solver, `_settle` and `_backup`): a finished
        game is a proven loss, a move into a proven loss a proven win, a node
        whose every move leads to a proven win a proven loss; descents take a
        proven win's move and pass over moves proven to lose;
    values an unproven leaf by one random fill (`fill_value`): a uniformly
        random half of the empty cells (rounded up) for the player to move,
        the rest for the other, then one winner check on row bitmasks;
    backs the value up to the root.

OpenSpiel MCTSBot (mcts.cc `MCTSearch`, RandomRolloutEvaluator(1)): one
tree, one Python call per move. A simulation
    clones the State and descends by UCT (Q + c sqrt(ln N / n), c = 2): an
        unvisited child is worth +inf, so every child is tried once, in a
        shuffled order, before any twice; a child known to end the game is
        worth its result; every child of a node is scored;
    applies each move of the descent with State::ApplyAction, which keeps its
        stones' edge labels and checks for a winner;
    evaluates a node on its first visit and expands it (a child per legal
        move, uniform priors, shuffled) on its second;
    stores a finished game's exact result in its node; only with solve=True
        do results climb (a node is solved when a child wins for the player
        to move or every child is solved), and then a solved root ends the
        search;
    values a leaf by one rollout: clone, then move by move a uniformly random
        legal move (a new LegalActions vector each move) and a winner check
        after each, until a player connects;
    backs the result up to the root.

What still differs, and cannot be removed here:
  - Rollout: hexzd's random fill against OpenSpiel's move-by-move rollout.
    Their results have the same distribution (stones stay, so the first
    player to connect is the one connected on the full board, and Hex's full
    board has exactly one winner), but a fill is one winner check, the
    rollout one per move. hexzd has no move-by-move rollout in its search and
    MCTSBot no fill.
  - Solver: hexzd's on both rows. It finds a move that wins at once when it
    expands a node, where MCTSBot (solve=True) must first visit that child;
    after a proof, hexzd keeps running the move's budget, each simulation
    cheap (down the proven move, no rollout) and counted, where MCTSBot stops
    (on 9x9, about 3% of hexzd's moves ended with a proven root, measured).
    The solve=False row proves nothing: plain MCTS, the baseline this
    benchmark had before.
  - Selection: PUCT with FPU, scoring the tried moves, against UCT, scoring
    every child: trees of other shapes. The PUCT row uses MCTSBot's PUCT
    (c 1.5, uniform priors), which has no FPU (an unvisited child's Q is 0)
    and also scores every child.
  - Expansion: hexzd expands every new leaf (edges, winning-cell check),
    MCTSBot a node on its second visit.
  - Batch: 256 trees per kernel call against one tree per Python call; the
    per-move calls cost hexzd 1/256 as much per game.
"""

from hexzd.benchmarks.timing import compare_rows, print_rows, single_core
from hexzd.search.mcts import Search

BATCH = 256
SIMS = 200  # simulations per move, for both


def hexzd_search(n: int, sims: int, batch: int = BATCH, seed: int = 0):
    search = Search(batch, n, seed=seed, explore=False, reuse_tree=False)

    def work() -> float:
        search.run(sims)
        moves, _ = search.choose()
        search.play(moves)
        done = search.roots.done
        if done.any():
            search.new_games(done)
        return batch * sims

    return work


def openspiel_bot(n: int, sims: int, solve: bool, puct: bool = False, seed: int = 0):
    """(bot, game): MCTSBot with one C++ random rollout per leaf; UCT c=2, or PUCT c=1.5."""
    import pyspiel

    game = pyspiel.load_game("hex", {"board_size": n})
    evaluator = pyspiel.RandomRolloutEvaluator(1, seed)
    policy = pyspiel.ChildSelectionPolicy.PUCT if puct else pyspiel.ChildSelectionPolicy.UCT
    c = 1.5 if puct else 2.0
    # game, evaluator, uct_c, max_simulations, max_memory_mb, solve, seed, verbose, child_selection_policy
    return pyspiel.MCTSBot(game, evaluator, c, sims, 1000, solve, seed, False, policy), game


def openspiel_search(n: int, sims: int, solve: bool, puct: bool = False, seed: int = 0):
    """One move per call, as `MCTSBot.step` makes it (MCTSearch, then BestChild); returns the simulations run."""
    bot, game = openspiel_bot(n, sims, solve, puct, seed)
    state = [game.new_initial_state()]

    def work() -> float:
        if state[0].is_terminal():
            state[0] = game.new_initial_state()
        root = bot.mcts_search(state[0])
        state[0].apply_action(root.best_child().action)
        return root.explore_count

    return work


def run(size: int = 9, seconds: float = 3.0, sims: int = SIMS) -> dict:
    single_core()
    return compare_rows(
        "mcts",
        "simulations/s",
        size,
        seconds,
        hexzd_search(size, sims),
        [
            ("MCTSBot UCT c=2, solve=True", openspiel_search(size, sims, solve=True)),
            ("MCTSBot UCT c=2, solve=False", openspiel_search(size, sims, solve=False)),
            ("MCTSBot PUCT c=1.5, solve=True", openspiel_search(size, sims, solve=True, puct=True)),
        ],
        batch=BATCH,
        sims_per_move=sims,
    )


def report(result: dict) -> None:
    n, sims = result["size"], result["sims_per_move"]
    print_rows(
        result,
        f"mcts, {n}x{n}, {sims} simulations per move, one rollout per leaf, one core",
        [
            "alike: no root noise, most visited move, a fresh tree each move, simulations run counted",
            "differs: hexzd's rollout is a random fill and one winner check, MCTSBot's move by move with a",
            "  check per move (same result distribution); hexzd proves wins and losses on every row and finds",
            "  a move that wins at once on expansion, and after a proof runs cheap simulations where MCTSBot",
            "  (solve=True) stops; PUCT with FPU scoring tried moves vs MCTSBot scoring every child; hexzd",
            "  expands each new leaf, MCTSBot on its second visit; 256 trees per call vs one",
        ],
    )
