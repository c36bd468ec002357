"""`hexzd bench strength`: playing strength per minute and per FLOP, from scratch.

Each seed is a real run: `hexzd start --headless --for M` on a fresh state
file with the default config (or `--config FILE`) but for the board size and
the seeds. The run
is then judged from outside, as `hexzd htp` plays (800 simulations):
- boards up to 5x5: every promoted snapshot plays every first move out from
  the side that wins it, against perfect defence (`hexzd perfect
  --openings`). The milestone is the first snapshot that converts all n*n.
- larger boards: the final best (and with `curve` K, K snapshots spread
  evenly over the run's minutes) plays OpenSpiel's C++ MCTS with random
  rollouts (OPPONENT_SIMS simulations a move, or `judge_sims`), every first
  move with colours swapped (`hexzd match`, n*n pairs). The milestone is the
  first judged snapshot to score 95%. Each such match takes minutes of a
  core, which is why the curve is opt-in and `rejudge` judges runs already
  trained. MCTS @10k stops telling 7x7 snapshots apart within minutes; a
  finer judge is more simulations (`judge_sims` 100,000, about ten times the
  time), or on 6x6 and 7x7 the late positions of strong games (`judge_games`,
  a record file) played out against perfect defence (`hexzd perfect
  --from-games`). Random late positions against perfect defence (`hexzd perfect`) were
  tried as the finer 7x7 judge and left out: every snapshot from minute 13 of
  a 60-minute run converted 281 to 283 of 283 (docs/results.md).
A snapshot's minutes, PFLOP and CPU-hours are those of the run when the
trainer made it (models.wall_seconds, selfplay_flops + train_flops: network
FLOPs only, as boardlaw counts; cpu_seconds: every process's CPU time, the
rollout phase before the first network included). The baseline is
boardlaw's compute frontier to near-perfect play (Jones 2021), about 2.3e14
FLOP on 6x6, 2e15 on 7x7 and 3.6e16 on 9x9, counted as its search's forward
passes only.

Each step is a `hexzd` command in a child process, the way a user runs it.
"""

import json
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tomlkit

from hexzd import store
from hexzd.config import default_toml
from hexzd.evaluation.perfect import LATE_MAX_SIZE
from hexzd.evaluation.perfect import MAX_SIZE as PERFECT_MAX_SIZE
from hexzd.evaluation.stats import wilson
from hexzd.evaluation.throttle import usable_cores
from hexzd.store import reads

SIMS = 800  # hexzd htp's default
OPPONENT_SIMS = 10_000
TARGET_SCORE = 0.95
BOARDLAW_FLOPS = {6: 2.3e14, 7: 2e15, 9: 3.6e16}


def run(
    size: int,
    minutes: float,
    seeds: int = 1,
    out: str | None = None,
    config: str | None = None,
    curve: int = 1,
    rejudge: bool = False,
    judge_sims: int = OPPONENT_SIMS,
    judge_games: str | None = None,
    echo=print,
) -> dict:
    """Trains and judges `seeds` runs; the median seed's figures and every seed's.

    config: a config file's text (default: the default config); each run
    takes it with `size` and its own seed. curve: snapshots judged on boards
    above 5x5. rejudge: judge the runs already in `out`, training none.
    judge_sims: the MCTS judge's simulations a move on boards above 5x5.
    judge_games: on 6x6 and 7x7, a record file (`hexzd match --record`) whose
    games' late positions each judged snapshot also converts against perfect
    defence (`hexzd perfect --from-games`).
    """
    if judge_games and not PERFECT_MAX_SIZE < size <= LATE_MAX_SIZE:
        raise RuntimeError(f"judge games are for 6x6 and 7x7 boards, not {size}x{size}")
    if rejudge and not (out and Path(out, f"{size}x{size}-seed0.sqlite").exists()):
        raise RuntimeError(f"nothing to rejudge: no {size}x{size}-seed0.sqlite in {out}")
    where = Path(out) if out else Path(tempfile.mkdtemp(prefix="hexzd-strength-"))
    where.mkdir(parents=True, exist_ok=True)
    results = []
    for seed in range(seeds):
        db = where / f"{size}x{size}-seed{seed}.sqlite"
        if not rejudge:
            echo(f"seed {seed}: training {minutes:g} min on {size}x{size} into {db}")
            _train(db, size, minutes, seed, config or default_toml())
        elif not db.exists():
            break
        results.append(_judge(db, size, curve, judge_sims, judge_games, echo))
    trained = None if rejudge else minutes  # a rejudged run's length is its own
    return {"bench": "strength", "size": size, "minutes": trained, "runs": results, **_median(results)}


def _train(db: Path, size: int, minutes: float, seed: int, text: str) -> None:
    config = tomlkit.parse(text)
    config.setdefault("game", tomlkit.table())["board_size"] = size
    config.setdefault("train", tomlkit.table())["seed"] = seed
    db.with_suffix(".toml").write_text(tomlkit.dumps(config))
    log = db.with_suffix(".log")
    with log.open("w") as f:
        hexzd(
            "start",
            "--headless",
            "--config",
            db.with_suffix(".toml"),
            "--db",
            db,
            "--for",
            f"{minutes * 60:.0f}s",
            stdout=f,
        )


def _judge(db: Path, size: int, curve: int, judge_sims: int, judge_games: str | None, echo) -> dict:
    with store.read_only(db) as connection:
        snapshots = reads.rateable_snapshots(connection)
        games = int(store.counters(connection).get("games", 0))
    run = {"db": str(db), "games": games, "promoted": len(snapshots), "milestone": None}
    if not snapshots:
        return {**run, "final": None}
    perfect = size <= PERFECT_MAX_SIZE
    judged = snapshots if perfect else spread(snapshots, curve)

    def judge(s: dict) -> dict:
        if perfect:
            return _openings(db, s["model_id"], size)
        return _match(db, s["model_id"], size, judge_sims)

    # Each judge is a one-core child process (a match: two, in turn). The positions judges
    # take one core and run one after another, each from the proofs of those before it.
    cores = usable_cores()
    with ThreadPoolExecutor(max(1, cores - 1) if judge_games else cores) as pool, ThreadPoolExecutor(1) as solving:
        positions = [solving.submit(_positions, db, s["model_id"], size, judge_games) for s in judged if judge_games]
        points = []
        for i, (s, score) in enumerate(zip(judged, pool.map(judge, judged))):
            score = {**score, **positions[i].result()} if judge_games else score
            points.append({**_cost(s), **score})
            echo(f"  model {s['model_id']}: {_score(score)}")
            if run["milestone"] is None and _reached(score):
                run["milestone"] = _cost(s)
    return {**run, "curve": points, "final": points[-1]}


def spread(snapshots: list[dict], k: int) -> list[dict]:
    """At most k snapshots, the last one made by each k-th of the run's minutes (the final one included)."""
    end = snapshots[-1]["wall_seconds"]
    picked = []
    for i in range(1, k + 1):
        made = [s for s in snapshots if s["wall_seconds"] <= end * i / k]
        if made and made[-1] not in picked:
            picked.append(made[-1])
    return picked


def _reached(score: dict) -> bool:
    return score["converted"] == score["of"] if "converted" in score else score["score"] >= TARGET_SCORE


def _cost(snapshot: dict) -> dict:
    return {
        "model": snapshot["model_id"],
        "minutes": snapshot["wall_seconds"] / 60,
        "pflop": (snapshot["selfplay_flops"] + snapshot["train_flops"]) / 1e15,
        "cpu_hours": (snapshot["cpu_seconds"] or 0.0) / 3600,  # every process, the rollout phase's too
    }


def _openings(db: Path, model: int, size: int) -> dict:
    """Won openings converted against perfect defence, at hexzd htp's simulations."""
    out = hexzd("perfect", "--db", db, "--model", model, "--openings", "--sims", SIMS, "--json", capture=True)
    [agent] = json.loads(out)["agents"]
    return {"converted": agent["converted"]["hits"], "of": size * size}


def _positions(db: Path, model: int, size: int, games: str) -> dict:
    """Late positions of recorded games converted against perfect defence, at hexzd htp's simulations.

    The snapshots judged play mostly the same moves, so one file of proved positions, kept
    beside the runs, spares each judge the proofs of those before it (34 times fewer nodes
    for the second of two 7x7 snapshots)."""
    solved = db.with_name(f"{size}x{size}-solved.json")
    args = ("--from-games", games, "--solved", solved, "--sims", SIMS, "--json")
    out = hexzd("perfect", "--db", db, "--model", model, *args, capture=True)
    [agent] = json.loads(out)["agents"]
    converted = agent["conversion"]
    return {"positions_converted": converted["hits"], "positions": converted["total"]}


def _match(db: Path, model: int, size: int, judge_sims: int) -> dict:
    """The snapshot against OpenSpiel's MCTS, every first move with colours swapped."""
    engine = f"{sys.executable} -m hexzd htp --db {db} --model {model} --sims {SIMS}"
    opponent = f"{sys.executable} -m hexzd.benchmarks.openspiel_htp --sims {judge_sims}"
    out = hexzd("match", engine, opponent, "--size", size, "--games", 2 * size * size, "--json", capture=True)
    s = json.loads(out)
    wins, games = s["a_wins"], s["a_wins"] + s["b_wins"]
    lo, hi = wilson(wins, games)
    judge = s["names"]["B"]  # as the judge names itself: "openspiel-mcts 10000 simulations"
    return {"wins": wins, "games": games, "score": wins / games, "score_lo": lo, "score_hi": hi, "judge": judge}


def _median(results: list[dict]) -> dict:
    """The median over seeds of the final score and of the milestone's minutes, PFLOP and CPU-hours
    (a seed that missed the milestone counts as never reaching it)."""
    finals = [r["final"] for r in results if r["final"]]
    score = [f["converted"] / f["of"] if "converted" in f else f["score"] for f in finals]
    reached = [r["milestone"] for r in results]
    inf = float("inf")
    return {
        "median_final_score": statistics.median(score) if score else None,
        "milestone_reached": sum(m is not None for m in reached),
        "median_milestone_minutes": _finite(statistics.median([m["minutes"] if m else inf for m in reached])),
        "median_milestone_pflop": _finite(statistics.median([m["pflop"] if m else inf for m in reached])),
        "median_milestone_cpu_hours": _finite(statistics.median([m["cpu_hours"] if m else inf for m in reached])),
    }


def _finite(x: float) -> float | None:
    return None if x == float("inf") else x


def hexzd(*args, stdout=None, capture: bool = False) -> str:
    """Runs a `hexzd` command as a child process; its output, or an error naming it.

    Unlike hexzd.processes.run, with no budget and in this process's group: each command
    ends by itself (a run after its `--for`), and a Ctrl-C reaches it as it reaches us."""
    command = [sys.executable, "-m", "hexzd", *map(str, args)]
    done = subprocess.run(command, stdout=subprocess.PIPE if capture else stdout, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:])} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout or ""


def report(result: dict) -> None:
    n = result["size"]
    each = "rejudged" if result["minutes"] is None else f"{result['minutes']:g} minutes a seed"
    print(f"hexzd bench strength: {n}x{n}, {each}, {len(result['runs'])} seeds")
    for r in result["runs"]:
        f, m = r["final"], r["milestone"]
        if f is None:
            print(f"  {r['db']}: no promoted snapshot in {r['games']} games")
            continue
        score = _score(f)
        reached = (
            f"at {m['minutes']:.1f} min, {m['pflop']:.4f} PFLOP, {m['cpu_hours']:.2f} CPU-h" if m else "not reached"
        )
        print(f"  {r['db']}: best model {f['model']} ({f['pflop']:.4f} PFLOP): {score}; milestone {reached}")
        for point in r["curve"][:-1]:  # the earlier snapshots judged, oldest first
            made = f"{point['minutes']:.1f} min, {point['pflop']:.4f} PFLOP"
            print(f"    model {point['model']} at {made}: {_score(point)}")
    minutes, pflop = result["median_milestone_minutes"], result["median_milestone_pflop"]
    reached = f"{minutes:.1f} min, {pflop:.4f} PFLOP" if minutes is not None else "not reached by the median seed"
    baseline = BOARDLAW_FLOPS.get(n)
    print(f"median milestone: {reached}" + (f" (boardlaw's frontier: {baseline / 1e15:g} PFLOP)" if baseline else ""))


def _score(f: dict) -> str:
    if "converted" in f:
        return f"{f['converted']}/{f['of']} won openings converted"
    said = (
        f"{f['wins']}/{f['games']} against {f['judge']} "
        f"({f['score']:.0%}, 95% CI [{f['score_lo']:.0%}, {f['score_hi']:.0%}])"
    )
    if "positions" in f:
        lo, hi = wilson(f["positions_converted"], f["positions"])
        said += f"; {f['positions_converted']}/{f['positions']} positions converted ([{lo:.0%}, {hi:.0%}])"
    return said
