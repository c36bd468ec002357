"""Who plays whom for ratings, and the ratings that their games give.

A player is a network at a simulation count, or random-rollout MCTS at one:
`model 12 @64`, `rollouts @1000`. Every duel game (promotion duels and rating
matches alike) is a result between two players, and one Bradley-Terry fit
over all of them (hexzd.evaluation.ratings.fit) rates every player on one scale. The
first reference, pure rollout MCTS at `ratings.references[0]` simulations,
is 0 Elo, so that ratings compare across runs and board sizes.

Rating matches fill the gaps that promotion duels leave: neighbouring
references play each other until the ladder is fixed (`ladder_pairs`), and
snapshots play the reference closest to their rating.
"""

from dataclasses import dataclass

from hexzd.evaluation.ratings import fit

PRIOR_GAMES = 2.0  # BayesElo-like: keeps a perfect record finite


def player(model_id: int | None, sims: int) -> str:
    return f"rollouts @{sims}" if model_id is None else f"model {model_id} @{sims}"


@dataclass(frozen=True)
class Pairing:
    """Two players to meet in a duel: the candidate side and the opponent side."""

    candidate_id: int | None
    sims: int
    opponent_id: int | None
    opponent_sims: int


def rate(results, references: list[int]) -> list[tuple]:
    """Ratings rows (player, model_id, sims, rating, lo, hi, games, anchor) from the duel results
    (candidate_id, sims, opponent_id, opponent_sims, candidate wins, games) of hexzd.store.writes."""
    games, sides = [], {}
    for candidate, sims, opponent, opponent_sims, wins, count in results:
        a, b = player(candidate, sims), player(opponent, opponent_sims)
        sides[a], sides[b] = (candidate, sims), (opponent, opponent_sims)
        games.append((a, b, wins, count - wins))
    if not games:
        return []
    anchor = player(None, references[0])
    ratings = fit(games, anchors={anchor: 0.0} if anchor in sides else None, prior_games=PRIOR_GAMES)
    return [(name, *sides[name], r.elo, r.lo, r.hi, r.games, int(name == anchor)) for name, r in ratings.items()]


def ladder_match(references: list[int], played: dict[tuple, int], ladder_pairs: int) -> Pairing | None:
    """The next neighbouring references to play, while the ladder has too few pairs.

    played[(sims_a, sims_b)] counts the games between rollouts @sims_a and @sims_b, either way round.
    """
    for low, high in zip(references, references[1:]):
        if played.get((low, high), 0) + played.get((high, low), 0) < 2 * ladder_pairs:
            return Pairing(None, high, None, low)
    return None


def closest_reference(references: list[int], rating: float | None, reference_ratings: dict[int, float]) -> int:
    """The reference whose rating is nearest: the most informative opponent."""
    if rating is None:
        return references[0]
    return min(references, key=lambda sims: abs(reference_ratings.get(sims, 0.0) - rating))
