"""A searching player: the best move in each of a batch of positions.

Duels, reference matches and the HTP engine all ask the same question, "what
does this network (or pure rollout MCTS) play here with S simulations?", so
they share this one answer. Each call searches from scratch, with no root
noise and no sampling: the most visited move, or a win in one.
"""

import numpy as np

from hexzd.config import SearchConfig
from hexzd.game.rules import Games
from hexzd.search.mcts import Evaluate, Search

RESIGN = -2  # a move value: the player to move gives the game up (outside engines do; hexzd's never)


def subset(games: Games, index) -> Games:
    """The games at `index`, copied."""
    return Games(games.n, games.swap, *(a[index].copy() for a in games.arrays))


class Player:
    """Plays by MCTS with `sims` simulations per move; evaluate=None: random rollouts."""

    def __init__(
        self,
        sims: int,
        evaluate: Evaluate | None = None,
        config: SearchConfig | None = None,
        seed: int = 0,
        name: str = "",
    ):
        self.sims, self.evaluate = int(sims), evaluate
        self.config = config or SearchConfig()
        self.seed = seed
        self.name = name or (f"rollouts-{sims}" if evaluate is None else f"net-{sims}")

    def moves(self, games: Games) -> np.ndarray:
        """int64[B]: a move for each game that is not over, -1 for those that are (never RESIGN)."""
        out = np.full(games.batch, -1, np.int64)
        live = np.flatnonzero(~games.done)
        if len(live) == 0:
            return out
        self.seed += 1  # fresh rollout randomness each call, yet reproducible
        search = Search(len(live), games.n, games.swap, self.config, seed=self.seed, explore=False, reuse_tree=False)
        search.roots = subset(games, live)
        search.run(self.sims, self.evaluate)
        out[live] = search.choose()[0]
        return out
