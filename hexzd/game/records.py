"""Game records as the state file stores them (the `games` table).

A record holds the moves in trmph form and, per move, the search's visit
distribution over actions (n*n cells, then swap). The distributions are kept
as float16 and zlib-compressed: about 2 bytes per action before compression,
and most entries are zero, so a 9x9 game of 60 moves packs into a few KB.
"""

import zlib
from dataclasses import dataclass

import numpy as np

from hexzd.game.notation import parse_trmph, to_trmph
from hexzd.game.rules import Positions, replay


def encode_policy(policies: np.ndarray) -> bytes:
    """float[T, n*n + 1] visit distributions -> the `games.policy` blob."""
    return zlib.compress(np.ascontiguousarray(policies, dtype="<f2").tobytes(), 6)


def decode_policy(blob: bytes, length: int, n: int) -> np.ndarray:
    """The `games.policy` blob -> float32[length, n*n + 1]. Raises ValueError if corrupt."""
    try:
        raw = zlib.decompress(blob)
    except zlib.error as e:
        raise ValueError(f"policy blob does not decompress: {e}") from None
    width = n * n + 1
    if len(raw) != 2 * length * width:
        raise ValueError(f"policy blob holds {len(raw)} bytes, not {2 * length * width}")
    return np.frombuffer(raw, dtype="<f2").astype(np.float32).reshape(length, width)


@dataclass
class GameRecord:
    """One finished self-play game, as a row of the `games` table."""

    board_size: int
    moves: str  # trmph, e.g. "a1b2c3"
    winner: int  # BLACK (1) or WHITE (2)
    policy: bytes  # encode_policy of the visit distributions, one per move
    sims: int = 0  # simulations per move of the search that played it
    model_id: int | None = None  # None: random-rollout MCTS

    @classmethod
    def from_arrays(cls, n, actions, policies, winner, sims=0, model_id=None) -> "GameRecord":
        return cls(n, to_trmph(actions, n), int(winner), encode_policy(policies), sims, model_id)

    @property
    def actions(self) -> list[int]:
        return parse_trmph(self.moves, self.board_size)

    def positions(self, swap: bool) -> Positions:
        """The game's training positions. Raises ValueError on a corrupt record."""
        actions = self.actions
        policies = decode_policy(self.policy, len(actions), self.board_size)
        positions = replay(self.board_size, swap, actions, policies)
        if positions.winner != self.winner:
            raise ValueError(f"the record says winner {self.winner}, the moves say {positions.winner}")
        return positions
