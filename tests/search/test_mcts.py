"""Batched MCTS against the brute-force solver, plus tree invariants."""

import hashlib
import math

import numpy as np
import pytest
from solver import connected, winner, winning_moves

from hexzd.config import SearchConfig
from hexzd.native.tree import LOST, NO_WIN
from hexzd.search.mcts import Search, considered_visits


def random_positions(n, count, stones, seed):
    """Random legal positions with no winner yet, as move lists."""
    rng = np.random.default_rng(seed)
    found = []
    while len(found) < count:
        k = int(rng.integers(*stones))
        moves = [int(x) for x in rng.permutation(n * n)[:k]]
        cells = [0] * (n * n)
        for i, a in enumerate(moves):
            cells[a] = 1 if i % 2 == 0 else 2
        if winner(tuple(cells), n) == 0:
            found.append((moves, tuple(cells), 1 if k % 2 == 0 else 2))
    return found


def search_at(positions, n, sims, evaluate=None, **config):
    search = Search(len(positions), n, config=SearchConfig(**config), seed=7, explore=False)
    for ply in range(max(len(m) for m, _, _ in positions)):
        search.play([m[ply] if ply < len(m) else -1 for m, _, _ in positions])
    search.run(sims, evaluate)
    return search


def immediate_wins(cells, n, to_play):
    return [x for x in range(n * n) if cells[x] == 0 and connected(cells[:x] + (to_play,) + cells[x + 1 :], n, to_play)]


@pytest.mark.parametrize("n", [3, 4, 5])
def test_win_in_one_is_always_found(n):
    positions = [p for p in random_positions(n, 400, (2, n * n - 1), seed=n) if immediate_wins(p[1], n, p[2])][:60]
    assert len(positions) >= 30
    moves, _ = search_at(positions, n, sims=200).choose()
    for (_, cells, to_play), move in zip(positions, moves):
        assert move in immediate_wins(cells, n, to_play)


@pytest.mark.parametrize("n,stones,sims", [(3, (0, 6), 1500), (4, (6, 12), 4000)])
def test_rollout_mcts_finds_a_winning_move_in_won_positions(n, stones, sims):
    # Averaging backups alone can leave the visits on a move whose refutation
    # was found late (about one 4x4 won position in 300 at 12,000
    # simulations); the proven-loss backup rules such a move out.
    positions = [p for p in random_positions(n, 80, stones, seed=10 + n) if winning_moves(p[1], n, p[2])][:40]
    assert len(positions) == 40
    moves, _ = search_at(positions, n, sims).choose()
    missed = [(p[1], int(m)) for p, m in zip(positions, moves) if m not in winning_moves(p[1], n, p[2])]
    assert not missed


def proven_nodes(tree, b, cells, n, to_play):
    """(cells, to_play, node) for every node of tree b proven won or lost."""
    found = []

    def walk(node, cells, to_play):
        if tree.node_win[b, node] != NO_WIN:
            found.append((cells, to_play, node))
        first = tree.node_first[b, node]
        for e in range(first, first + tree.node_count[b, node]) if first >= 0 else ():
            child = tree.edge_child[b, e]
            if child >= 0:
                a = int(tree.edge_action[b, e])
                walk(child, cells[:a] + (to_play,) + cells[a + 1 :], 3 - to_play)

    walk(0, cells, to_play)
    return found


@pytest.mark.parametrize("rollouts", [True, False])
@pytest.mark.parametrize("n,stones,sims", [(3, (0, 6), 1500), (4, (6, 12), 4000)])
def test_proven_wins_and_losses_agree_with_the_solver(n, stones, sims, rollouts):
    positions = random_positions(n, 24, stones, seed=20 + n)
    evaluate = (
        None
        if rollouts
        else (lambda codes: (np.zeros((len(codes), n * n), np.float32), np.zeros(len(codes), np.float32)))
    )
    search = search_at(positions, n, sims, evaluate=evaluate)
    deep_wins = deep_losses = 0
    for b, (_, cells, to_play) in enumerate(positions):
        for cells_here, mover, node in proven_nodes(search.tree, b, cells, n, to_play):
            win = search.tree.node_win[b, node]
            if win >= 0:
                move = int(search.tree.edge_action[b, win])
                assert move in winning_moves(cells_here, n, mover)
                child = search.tree.edge_child[b, win]
                deep_wins += child >= 0 and search.tree.node_first[b, child] >= 0
            else:
                assert win == LOST
                over = winner(cells_here, n) != 0
                assert over or not winning_moves(cells_here, n, mover)
                deep_losses += not over
    assert deep_wins > 0 and deep_losses > 0  # proofs beyond a win in one


def test_random_fills_match_exact_fill_odds():
    # A random fill gives the player to move a uniform half (rounded up) of
    # the empty cells; the odds of winning are then a count over subsets.
    from itertools import combinations

    from hexzd.game.rules import Games
    from hexzd.native.rng import seeds

    n, fills = 3, 20_000
    for moves, cells, to_play in random_positions(n, 6, (2, 6), seed=5):
        games = Games.new(1, n)
        for a in moves:
            games.play([a])
        empty = [x for x in range(n * n) if cells[x] == 0]
        share = (len(empty) + 1) // 2
        wins = [
            connected(
                tuple(to_play if x in mine else 3 - to_play if c == 0 else c for x, c in enumerate(cells)), n, to_play
            )
            for mine in map(set, combinations(empty, share))
        ]
        exact = 2 * np.mean(wins) - 1
        value = games.playouts(seeds(1, len(moves)), fills)[0]
        assert abs(value - exact) < 4 * 2 / np.sqrt(fills), (cells, value, exact)


def test_row_sweep_winner_matches_the_solver_on_full_boards():
    from hexzd.native.board import black_joins

    rng = np.random.default_rng(0)
    for n in range(2, 10):
        rows, reach = np.empty(n, np.int64), np.empty(n, np.int64)
        for _ in range(300):
            cells = tuple(int(c) for c in rng.integers(1, 3, n * n))
            rows[:] = [sum(1 << c for c in range(n) if cells[r * n + c] == 1) for r in range(n)]
            assert black_joins(rows, reach, n) == connected(cells, n, 1)


def test_gumbel_finds_win_in_one_with_a_small_budget():
    n = 4
    positions = [p for p in random_positions(n, 400, (6, 12), seed=3) if immediate_wins(p[1], n, p[2])][:40]
    moves, policy = search_at(positions, n, sims=32, gumbel=True, gumbel_actions=16).choose()
    for (_, cells, to_play), move in zip(positions, moves):
        assert move in immediate_wins(cells, n, to_play)
    assert np.allclose(policy.sum(axis=1), 1.0, atol=1e-5)


def test_sequential_halving_schedule_matches_hand_computation():
    # 4 moves, 10 simulations: one visit each, then the best 2 get 2 more
    # visits per phase until the budget is spent.
    assert considered_visits(4, 10) == [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]
    assert considered_visits(1, 3) == [0, 1, 2]


def subtree(tree, b, node):
    """A plain-Python copy of a subtree: {move path: (N, W, P)}."""
    out = {}

    def walk(node, path, prior):
        out[path] = (int(tree.node_visits[b, node]), float(tree.node_value[b, node]), prior)
        first = tree.node_first[b, node]
        for e in range(first, first + tree.node_count[b, node]) if first >= 0 else ():
            child = tree.edge_child[b, e]
            if child >= 0:
                walk(child, path + (int(tree.edge_action[b, e]),), float(tree.edge_prior[b, e]))

    walk(node, (), None)
    return out


def check_invariants(tree, b):
    for node in range(tree.num_nodes[b]):
        visits = tree.node_visits[b, node]
        assert visits >= 1
        assert -1.0 - 1e-4 <= tree.node_value[b, node] / visits <= 1.0 + 1e-4
        first = tree.node_first[b, node]
        if first < 0:
            continue
        edges = slice(first, first + tree.node_count[b, node])
        children = tree.edge_child[b, edges]
        below = tree.node_visits[b, children[children >= 0]].sum()
        if tree.node_win[b, node] == LOST:
            assert below <= visits - 1  # search stops at a proven loss
        else:
            assert below == visits - 1, (node, tree.node_win[b, node])
        assert abs(tree.edge_prior[b, edges].sum() - 1.0) < 1e-4


def test_tree_invariants_and_reuse_keep_the_played_subtree():
    search = Search(8, 5, swap=True, seed=3)
    for _ in range(12):
        search.run(150)
        for b in range(search.batch):
            check_invariants(search.tree, b)
        moves, _ = search.choose()
        kept = []
        for b, move in enumerate(moves):
            t = search.tree
            first = t.node_first[b, 0]
            edge = first + list(t.edge_action[b, first : first + t.node_count[b, 0]]).index(move)
            kept.append(subtree(t, b, t.edge_child[b, edge]))
        search.config = search.config.model_copy(update={"dirichlet_fraction": 0.0})
        search.play(moves)
        for b in range(search.batch):
            after = subtree(search.tree, b, 0)
            assert after.keys() == kept[b].keys()
            for path in after:
                assert after[path][:2] == kept[b][path][:2]
                if path:
                    assert after[path][2] == kept[b][path][2]
        search.config = SearchConfig()
        done = search.roots.done
        if done.any():
            search.new_games(done)


def test_stated_bytes_per_node_and_edge_match_the_arrays():
    from hexzd.native.tree import EDGE_BYTES, NODE_BYTES
    from hexzd.search.mcts import new_tree

    tree = new_tree(1, 4, 4)
    node = sum(a.itemsize for name, a in zip(tree._fields, tree) if name.startswith("node"))
    edge = sum(a.itemsize for name, a in zip(tree._fields, tree) if name.startswith("edge"))
    assert (node, edge) == (NODE_BYTES, EDGE_BYTES) == (28, 18)


def hashed_network(row: bytes, nn: int) -> tuple[np.ndarray, np.float32]:
    """Peaked logits and a value that depend on the position alone (its network input's bytes)."""
    rng = np.random.default_rng(int.from_bytes(hashlib.blake2b(row, digest_size=8).digest(), "little"))
    return rng.normal(0.0, 2.0, nn).astype(np.float32), np.float32(rng.uniform(-0.9, 0.9))


def network_input(cells, n, to_play) -> bytes:
    """The compact input layout of native/board.py codes_one, written out: White's board transposed."""
    row = []
    for r in range(n):
        for c in range(n):
            stone = cells[c * n + r] if to_play == 2 else cells[r * n + c]
            row.append(0 if stone == 0 else 1 if stone == to_play else 2)
    return bytes(row + [0])


def textbook_search(cells, n, to_play, sims, c_puct, fpu_reduction, gumbel_actions=0):
    """Plain-Python PUCT that scores every legal move at every node; the root's visits per move.

    With gumbel_actions, the root runs Gumbel's sequential halving instead, without noise
    (g = 0): the gumbel_actions moves of highest prior, each visited as considered_visits
    says, the one of highest logit + sigma(Q) among those due. Stored sums are float32,
    as in the kernels' arrays, so that the two agree bit for bit.
    """
    f32 = np.float32
    root = {"N": 0, "W": f32(0.0), "P": None, "kids": {}}
    deepest = 0
    for _ in range(sims):
        node, board, mover, path = root, list(cells), to_play, [root]
        while node["P"] is not None:
            if node is root and gumbel_actions:
                best = halving_choice(root, sims, gumbel_actions)
                board[best], mover = mover, 3 - mover
                node = node["kids"].setdefault(best, {"N": 0, "W": f32(0.0), "P": None, "kids": {}})
                path.append(node)
                continue
            parent_q = float(node["W"]) / node["N"] if node["N"] else 0.0
            scale = c_puct * math.sqrt(max(node["N"], 1))
            best, best_score = None, -math.inf
            for a, p in node["P"]:
                kid = node["kids"].get(a)
                visits = kid["N"] if kid else 0
                q = parent_q - fpu_reduction if visits == 0 else -float(kid["W"]) / visits
                score = q + scale * float(p) / (1 + visits)
                if score > best_score:
                    best, best_score = a, score
            board[best], mover = mover, 3 - mover
            node = node["kids"].setdefault(best, {"N": 0, "W": f32(0.0), "P": None, "kids": {}})
            path.append(node)
        deepest = max(deepest, len(path) - 1)
        logits, value = hashed_network(network_input(board, n, mover), n * n)
        legal = [a for a in range(n * n) if board[a] == 0]
        canonical = [a if mover == 1 else (a % n) * n + a // n for a in legal]
        top = max(logits[i] for i in canonical)
        weights = [f32(math.exp(logits[i] - top)) for i in canonical]
        total = sum(float(w) for w in weights)
        node["P"] = [(a, f32(float(w) / total)) for a, w in zip(legal, weights)]
        v = float(value)
        for visited in reversed(path):
            visited["N"] += 1
            visited["W"] = f32(visited["W"] + v)
            v = -v
    return {a: kid["N"] for a, kid in root["kids"].items()}, deepest


def halving_choice(root, sims, m):
    """The root move sequential halving visits next (Danihelka et al. 2022, as mctx runs it)."""
    logit = {a: float(np.float32(math.log(max(float(p), 1e-30)))) for a, p in root["P"]}
    considered = sorted(sorted(logit, key=lambda a: -logit[a])[:m])  # in board order, for ties
    visits = {a: root["kids"][a]["N"] if a in root["kids"] else 0 for a in considered}
    target = considered_visits(len(considered), sims)[min(root["N"] - 1, sims - 1)]
    root_q = float(root["W"]) / max(root["N"], 1)
    most = max(visits.values())
    best, best_score = None, -math.inf
    for a in considered:
        q = -float(root["kids"][a]["W"]) / visits[a] if visits[a] else root_q
        score = logit[a] + (50.0 + most) * (q + 1.0) * 0.5
        if visits[a] == target and score > best_score:
            best, best_score = a, score
    return best if best is not None else min(considered, key=lambda a: visits[a])


@pytest.mark.parametrize("gumbel", [False, True])
def test_search_with_network_priors_visits_as_the_textbook_rules_that_score_every_move(gumbel):
    """The kernels score only the tried moves and the best untried one (and at a Gumbel root
    only the considered moves); the visits must not change."""
    n, sims = 9, 200
    positions = random_positions(n, 10, (0, 5), seed=5)

    def evaluate(codes):
        out = [hashed_network(row.tobytes(), n * n) for row in codes]
        return np.stack([o[0] for o in out]), np.array([o[1] for o in out], np.float32)

    config = SearchConfig(gumbel=gumbel)
    search = search_at(positions, n, sims, evaluate=evaluate, gumbel=gumbel)
    visits = search.visits()
    m = config.gumbel_actions if gumbel else 0
    for b, (moves, cells, to_play) in enumerate(positions):
        expected, deepest = textbook_search(cells, n, to_play, sims, config.c_puct, config.fpu_reduction, m)
        assert len(moves) + deepest < 2 * n - 3  # no mover had n - 1 stones: no win in one, no proofs
        got = {a: int(visits[b, a]) for a in range(n * n) if visits[b, a] > 0}
        assert got == expected
