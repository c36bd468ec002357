"""The daemon's statements: every write to the state file, and the reads it makes while writing.

`Writer` wraps the daemon's one aiosqlite connection (hexzd.store.writer).
The daemon groups calls into transactions (`begin`, `commit`, `rollback`);
a method never commits on its own. Results arrive as the worker messages of
hexzd.daemon.messages, read here by their fields only.
"""

from dataclasses import dataclass

import aiosqlite

from hexzd.store import reads

PERFECT = "perfect"  # perfect play's player name (hexzd.evaluation.scale), kept here, below every user of it

# Aggregated duel results: (candidate_id, sims, opponent_id, opponent_sims, candidate wins, games,
# opponent_engine, complete pairs the candidate lost both games of, split, won both), the engine
# NULL unless the opponent is an outside engine. A pair, not a game, is an independent trial
# (hexzd.evaluation.ratings, "Intervals").
RESULTS_SQL = """
    WITH pairs AS (SELECT duel_id, pair, COUNT(*) AS games, SUM(winner = candidate_colour) AS wins
                   FROM duel_games GROUP BY duel_id, pair)
    SELECT d.candidate_id, d.sims, d.opponent_id, d.opponent_sims, SUM(p.wins), SUM(p.games), d.opponent_engine,
           SUM(p.games = 2 AND p.wins = 0), SUM(p.games = 2 AND p.wins = 1), SUM(p.games = 2 AND p.wins = 2)
    FROM pairs p JOIN duels d ON d.id = p.duel_id
    GROUP BY d.candidate_id, d.sims, d.opponent_id, d.opponent_sims, d.opponent_engine
"""


# The tables that retention thins to a row limit, each with what names a series in it:
# each series keeps its own spread and ends (hexzd.daemon.ticks passes the limits).
THINNED = {
    "events": "level || char(31) || source",
    "metrics": "source || char(31) || name",
    "tuning": "knob",
    "config_history": "accepted",
}
# A run, for thinning, is a daemon's life: from its start event to the next start.
RUN_STARTS = "SELECT at FROM events WHERE source = 'daemon' AND message LIKE 'started (pid %'"
RUN_ENDS = "source = 'daemon' AND (message LIKE 'started (pid %' OR message LIKE 'stopping: %')"


@dataclass
class Window:
    """How far retention got: games up to `edge` are thinned (`old` of them kept); the
    `after` positions of the games after it are in the window, up to game `last`."""

    edge: int
    after: int
    last: int
    old: int
    thin_every: int


class Writer:
    def __init__(self, connection: aiosqlite.Connection):
        self.connection = connection
        self.window: Window | None = None  # retention's place in the games, read on its first call
        self.rows: dict[str, int] = {}  # THINNED tables' row counts, once counted, with the rows added since

    async def close(self) -> None:
        await self.connection.close()

    # -- transactions ----------------------------------------------------------

    async def begin(self) -> None:
        await self.connection.execute("BEGIN IMMEDIATE")

    async def commit(self) -> None:
        await self.connection.execute("COMMIT")

    async def rollback(self) -> None:
        self.window, self.rows = None, {}  # retention's memory may be ahead of the file: read again
        if self.connection.in_transaction:
            await self.connection.execute("ROLLBACK")

    async def _one(self, sql: str, params=()):
        async with self.connection.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def _all(self, sql: str, params=()) -> list:
        async with self.connection.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    # -- meta: the config the file was made with, the counters ------------------

    async def made_with(self) -> str | None:
        row = await self._one("SELECT value FROM meta WHERE key = 'config'")
        return row[0] if row else None

    async def set_made_with(self, config_json: str) -> None:
        await self.connection.execute("INSERT INTO meta VALUES ('config', ?)", (config_json,))

    async def rating_of(self, model_id: int) -> dict | None:
        """A model's rating, its 95% interval's half width, status (reads.MODEL_RATING_SQL) and
        games; None while it has none."""
        row = await self._one(reads.MODEL_RATING_SQL, (model_id,))
        return None if row is None else dict(zip(("rating", "half_width", "status", "games"), row))

    async def counters(self, names) -> dict[str, float]:
        """The counters `names`, 0 for those not saved yet."""
        saved = reads.counters_of(await self._all(reads.COUNTERS_SQL))
        return {name: saved.get(name, 0.0) for name in names}

    async def save_counters(self, counters: dict[str, float]) -> None:
        await self.connection.executemany(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(f"counter.{k}", repr(v)) for k, v in counters.items()],
        )

    async def best_model(self) -> int | None:
        row = await self._one(reads.BEST_MODEL_SQL)
        return row[0] if row else None

    async def add_config(self, at: float, text: str, accepted: bool, error: str | None) -> None:
        await self.connection.execute(
            "INSERT INTO config_history (at, text, accepted, error) VALUES (?, ?, ?, ?)",
            (at, text, int(accepted), error),
        )
        self._added("config_history", 1)

    # -- results of the workers ----------------------------------------------------

    async def add_event(self, at: float, level: str, source: str, message: str) -> None:
        await self.connection.execute(
            "INSERT INTO events (at, level, source, message) VALUES (?, ?, ?, ?)", (at, level, source, message)
        )
        self._added("events", 1)

    async def add_metrics(self, at: float, source: str, values: dict[str, float]) -> None:
        await self.connection.executemany(
            "INSERT INTO metrics VALUES (?, ?, ?, ?)", [(at, source, name, value) for name, value in values.items()]
        )
        self._added("metrics", len(values))

    async def add_game(self, at: float, game) -> bool:
        """Stores a self-play game; False for a repeat of a game already stored (the same `uid`:
        a batch delivered twice), which is stored once."""
        cursor = await self.connection.execute(
            "INSERT INTO games (model_id, created_at, board_size, sims, moves, winner, length, policy,"
            " evals, worker, node, uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT(uid) DO NOTHING",  # only a repeat: any other refusal still raises
            (
                game.model_id,
                at,
                game.board_size,
                game.sims,
                game.moves,
                game.winner,
                game.length,
                game.policy,
                game.evals,
                game.worker,
                game.node,
                game.uid,
            ),
        )
        return bool(cursor.rowcount)

    async def flops_per_eval(self, model_id: int) -> int:
        row = await self._one("SELECT flops_per_eval FROM models WHERE id = ?", (model_id,))
        return row[0] if row else 0

    async def add_snapshot(self, at: float, s, counters: dict[str, float], wall_seconds: float) -> int:
        """Stores a trainer snapshot as a new model; only the newest keeps its checkpoint. Returns its id."""
        parent = await self._one("SELECT MAX(id) FROM models")
        cursor = await self.connection.execute(
            "INSERT INTO models (parent_id, created_at, train_step, positions_seen, samples_trained, params,"
            " flops_per_eval, selfplay_flops, train_flops, wall_seconds, accel_seconds, cpu_seconds,"
            " positions_generated, weights, checkpoint) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                parent[0],
                at,
                s.train_step,
                s.positions_seen,
                s.samples_trained,
                s.params,
                s.flops_per_eval,
                counters["selfplay_flops"],
                s.train_flops,
                wall_seconds,
                counters["accel_seconds"],
                counters["cpu_seconds"],
                int(counters["positions"]),
                s.weights,
                s.checkpoint,
            ),
        )
        model_id = _row_id(cursor)
        # Only the newest checkpoint is needed to resume; older ones would only bloat the file.
        await self.connection.execute(
            "UPDATE models SET checkpoint = NULL WHERE id < ? AND checkpoint IS NOT NULL", (model_id,)
        )
        return model_id

    async def add_perfect_play(self, at: float, p) -> None:
        await self.connection.execute(
            "INSERT OR REPLACE INTO perfect_play (model_id, sims, at, seed, positions, won, kept, converted,"
            " value_sign) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (p.model_id, p.sims, at, p.seed, p.positions, p.won, p.kept, p.converted, p.value_sign),
        )

    # -- duels -----------------------------------------------------------------------

    async def add_duel_game(self, at: float, g) -> bool:
        """Stores a duel game; False for a repeat (a restarted worker's)."""
        cursor = await self.connection.execute(
            "INSERT OR IGNORE INTO duel_games (duel_id, pair, moves, winner, candidate_colour, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (g.duel_id, g.pair, g.moves, g.winner, g.candidate_colour, at),
        )
        if not cursor.rowcount:
            return False
        won = g.winner == g.candidate_colour
        # Games that finish after the decision are kept (they rate players) but not counted.
        await self.connection.execute(
            "UPDATE duels SET wins = wins + ?, losses = losses + ? WHERE id = ? AND result IS NULL",
            (int(won), int(not won), g.duel_id),
        )
        return True

    async def open_duel(self, duel_id: int) -> tuple | None:
        """(candidate_id, opponent_id, sims, opponent_sims, opponent_engine) of a duel still open;
        None if ended or unknown."""
        row = await self._one(
            "SELECT candidate_id, opponent_id, sims, opponent_sims, opponent_engine FROM duels"
            " WHERE id = ? AND result IS NULL",
            (duel_id,),
        )
        return tuple(row) if row else None

    async def end_duel(self, at: float, d) -> None:
        await self.connection.execute(
            "UPDATE duels SET finished_at = ?, wins = ?, losses = ?, llr = ?, result = ?, cpu_seconds = ? WHERE id = ?",
            (at, d.wins, d.losses, d.llr, d.result, d.cpu_seconds, d.duel_id),
        )

    async def match_crashed(self, duel_id: int) -> int | None:
        """Counts a crash of the duel worker in match `duel_id`; the match's crashes so far,
        None if it is no longer open."""
        await self.connection.execute(
            "UPDATE duels SET crashes = crashes + 1 WHERE id = ? AND result IS NULL", (duel_id,)
        )
        row = await self._one("SELECT crashes FROM duels WHERE id = ? AND result IS NULL", (duel_id,))
        return row[0] if row else None

    async def check_crashed(self, model_id: int) -> int:
        """Counts a crash of the duel worker in model_id's check against perfect play; its crashes so far."""
        await self.connection.execute(
            "INSERT INTO perfect_play_crashes (model_id, crashes) VALUES (?, 1)"
            " ON CONFLICT (model_id) DO UPDATE SET crashes = crashes + 1",
            (model_id,),
        )
        return (await self._one("SELECT crashes FROM perfect_play_crashes WHERE model_id = ?", (model_id,)))[0]

    async def fail_check(self, model_id: int, reason: str) -> None:
        """Gives up model_id's check against perfect play: it is not tried again."""
        await self.connection.execute(
            "UPDATE perfect_play_crashes SET failed = ? WHERE model_id = ?", (reason, model_id)
        )

    async def fail_duel(self, at: float, duel_id: int, reason: str) -> None:
        """Gives up an open match, saying why: a promotion duel is rejected, a rating match
        ends `played` with the games it has."""
        await self.connection.execute(
            "UPDATE duels SET finished_at = ?, failed = ?,"
            " result = CASE kind WHEN 'promotion' THEN 'rejected' ELSE 'played' END WHERE id = ? AND result IS NULL",
            (at, reason, duel_id),
        )

    async def failed_ratings(self) -> list[tuple]:
        """(candidate_id, sims, opponent_id, opponent_sims, opponent_engine) of each rating match given up."""
        return await self._all(
            "SELECT candidate_id, sims, opponent_id, opponent_sims, opponent_engine FROM duels"
            " WHERE kind = 'rating' AND failed IS NOT NULL"
        )

    async def promote(self, at: float, model_id: int, duel_id: int, score: float) -> None:
        await self.connection.execute("INSERT INTO promotions VALUES (?, ?, ?, ?)", (model_id, at, duel_id, score))
        await self.connection.execute("UPDATE models SET promoted_at = ? WHERE id = ?", (at, model_id))

    async def open_duel_kinds(self) -> set[str]:
        """The kinds ('promotion', 'rating') of the duels still open."""
        return {kind for (kind,) in await self._all("SELECT DISTINCT kind FROM duels WHERE result IS NULL")}

    async def newest_unduelled(self) -> int | None:
        """The newest snapshot newer than every promotion duel's candidate."""
        row = await self._one(
            "SELECT MAX(id) FROM models WHERE id > COALESCE("
            "(SELECT MAX(candidate_id) FROM duels WHERE kind = 'promotion'), 0)"
        )
        return row[0]

    async def new_duel(
        self,
        at: float,
        kind: str,
        candidate_id,
        sims: int,
        opponent_id,
        opponent_sims: int,
        pairs: int | None,
        opponent_engine: str | None = None,
    ) -> int:
        cursor = await self.connection.execute(
            "INSERT INTO duels (kind, candidate_id, sims, opponent_id, opponent_sims, pairs, started_at,"
            " opponent_engine) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (kind, candidate_id, sims, opponent_id, opponent_sims, pairs, at, opponent_engine),
        )
        return _row_id(cursor)

    # -- ratings -----------------------------------------------------------------------

    async def ladder_games(self) -> dict[tuple, int]:
        """Games of rollout references against references or engines, by (sims, opponent sims),
        or (sims, engine name) against an engine (perfect play, one of the ladder's, is one)."""
        rows = await self._all(
            "SELECT sims, COALESCE(opponent_engine, opponent_sims), COUNT(*)"
            " FROM duel_games g JOIN duels d ON d.id = g.duel_id"
            " WHERE d.candidate_id IS NULL AND d.opponent_id IS NULL"
            " GROUP BY sims, opponent_sims, opponent_engine"
        )
        return {(a, b): n for a, b, n in rows}

    # -- the kept ladder (hexzd.store.ladder) ---------------------------------------------

    async def run_id(self) -> str:
        """This state file's own id, which names its games in the kept ladder."""
        return (await self._one("SELECT value FROM meta WHERE key = 'run'"))[0]

    async def own_ladder_games(self) -> list[tuple]:
        """(duel, pair, sims, opponent sims, opponent engine or '', candidate colour, winner,
        moves, played at) of every game this run played between two references of the ladder:
        rollouts against rollouts or perfect play."""
        return await self._all(
            "SELECT d.id, g.pair, d.sims, d.opponent_sims, COALESCE(d.opponent_engine, ''), g.candidate_colour,"
            " g.winner, g.moves, g.created_at FROM duel_games g JOIN duels d ON d.id = g.duel_id"
            " WHERE d.candidate_id IS NULL AND d.opponent_id IS NULL AND d.kept_from IS NULL"
            " AND COALESCE(d.opponent_engine, ?) = ?",
            (PERFECT, PERFECT),
        )

    async def add_kept_ladder(self, games) -> None:
        """Copies kept games of other runs ((run, duel, pair, sims, opponent sims, engine or '',
        candidate colour, winner, moves, played at), hexzd.store.ladder.kept) as finished rating
        matches, one per duel that played them, marked kept_from their run. Pairs keep their
        numbers, so a pair split across runs never joins."""
        duels: dict[tuple, list] = {}
        for run, duel, *game in games:
            duels.setdefault((run, duel), []).append(game)
        for (run, _), played in duels.items():
            _, sims, opponent_sims, engine, *_ = played[0]
            wins = sum(winner == colour for _, _, _, _, colour, winner, _, _ in played)
            times = [game[-1] for game in played]
            cursor = await self.connection.execute(
                "INSERT INTO duels (kind, candidate_id, sims, opponent_id, opponent_sims, started_at, finished_at,"
                " wins, losses, result, opponent_engine, kept_from) VALUES ('rating', NULL, ?, NULL, ?, ?, ?, ?, ?,"
                " 'played', ?, ?)",
                (sims, opponent_sims, min(times), max(times), wins, len(played) - wins, engine or None, run),
            )
            await self.connection.executemany(
                "INSERT INTO duel_games (duel_id, pair, moves, winner, candidate_colour, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(cursor.lastrowid, p, moves, winner, colour, t) for p, _, _, _, colour, winner, moves, t in played],
            )

    async def has_duels(self) -> bool:
        return await self._one("SELECT 1 FROM duels LIMIT 1") is not None

    async def newest_promotion(self) -> tuple[int, float, float | None, int, int] | None:
        """The newest promoted model: (its id, when, its 95% interval's half-width or None
        unrated, the rated games its interval stands on, its rating-match games since then)."""
        row = await self._one(
            "SELECT m.id, p.at, (m.rating_hi - m.rating_lo) / 2,"
            " (SELECT COALESCE(MAX(r.games), 0) FROM ratings r WHERE r.model_id = m.id),"
            " (SELECT COALESCE(SUM(d.wins + d.losses), 0) FROM duels d WHERE d.kind = 'rating'"
            "  AND d.started_at >= p.at AND m.id IN (d.candidate_id, d.opponent_id))"
            " FROM promotions p JOIN models m ON m.id = p.model_id ORDER BY p.at DESC LIMIT 1"
        )
        return tuple(row) if row else None

    async def promoted(self) -> list[int]:
        """The promoted models that still have weights, in the order of their promotion."""
        rows = await self._all(
            "SELECT p.model_id FROM promotions p JOIN models m ON m.id = p.model_id"
            " WHERE m.weights IS NOT NULL ORDER BY p.at"
        )
        return [row[0] for row in rows]

    async def evaluation_seconds(self) -> dict[str, float]:
        """CPU seconds that the finished duels took, by kind (promotion, rating)."""
        return dict(await self._all(reads.EVALUATION_SECONDS_SQL))

    async def rating_match_times(self) -> list[tuple]:
        """(candidate_id, sims, opponent_id, opponent_sims, CPU seconds, games, opponent_engine)
        of each timed rating match."""
        return await self._all(
            "SELECT candidate_id, sims, opponent_id, opponent_sims, cpu_seconds, wins + losses, opponent_engine"
            " FROM duels"
            " WHERE kind = 'rating' AND result = 'played' AND wins + losses > 0 AND cpu_seconds IS NOT NULL"
        )

    async def duel_results(self) -> list[tuple]:
        """Every pairing's results, as RESULTS_SQL gives them."""
        return await self._all(RESULTS_SQL)

    async def replace_ratings(self, at: float, rows: list[tuple]) -> None:
        await self.connection.execute("DELETE FROM ratings")
        await self.connection.executemany(
            "INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [(*row, at) for row in rows]
        )
        # A model's rating is that of its player with the most games.
        await self.connection.execute(
            "UPDATE models SET (rating, rating_lo, rating_hi) = (SELECT rating, rating_lo, rating_hi"
            " FROM ratings WHERE ratings.model_id = models.id ORDER BY games DESC LIMIT 1)"
        )

    # -- the tuner ----------------------------------------------------------------------

    async def add_tuning(self, at: float, decisions) -> None:
        await self.connection.executemany(
            "INSERT INTO tuning VALUES (?, ?, ?, ?, ?)", [(at, d.knob, d.old, d.new, d.reason) for d in decisions]
        )
        self._added("tuning", len(decisions))

    def _added(self, table: str, rows: int) -> None:
        """Counts rows added to a thinned table (a rollback leaves the count high: the next
        thinning reads the table, and counts again)."""
        if table in self.rows:
            self.rows[table] += rows

    # -- retention -------------------------------------------------------------------------

    async def retain(self, keep_positions: int, thin_every: int, snapshot_every: int, old_games: int = 0) -> None:
        """Thins games older than the newest `keep_positions` positions (keeping every
        `thin_every`-th, none at 0; then at most `old_games` of them, evenly spread in time,
        0: no limit) and drops the weights of snapshots that are neither promoted, nor every
        `snapshot_every`-th, nor the newest, nor in an open duel.

        Incremental: the window's edge and the positions after it are remembered
        (`self.window`), so a call reads only the games new since the last and
        those its edge passes; the first call of a connection (and one after
        thin_every changes) reads them all once."""
        window = self.window
        if window is None or window.thin_every != thin_every:
            window = await self._read_window(keep_positions, thin_every)
        newest, added = await self._one("SELECT MAX(id), SUM(length) FROM games WHERE id > ?", (window.last,))
        if newest is not None:
            window.last, window.after = newest, window.after + added
        edge = window.edge
        while window.after > keep_positions:  # the edge moves on, a game at a time, read in chunks
            rows = await self._all("SELECT id, length FROM games WHERE id > ? ORDER BY id LIMIT 256", (edge,))
            if not rows:
                break
            for game_id, length in rows:
                if window.after <= keep_positions:
                    break
                edge, window.after = game_id, window.after - length
        if edge > window.edge:
            thin = "1" if thin_every == 0 else f"id % {int(thin_every)} != 0"
            passed = await self._one("SELECT COUNT(*) FROM games WHERE id > ? AND id <= ?", (window.edge, edge))
            cursor = await self.connection.execute(
                f"DELETE FROM games WHERE id > ? AND id <= ? AND {thin}", (window.edge, edge)
            )
            window.old += passed[0] - max(0, cursor.rowcount)
            window.edge = edge
        self.window = window
        if old_games and window.old > old_games:
            await self._thin("games", old_games, "created_at", region=f"id <= {int(window.edge)}")
            window.old = (await self._one("SELECT COUNT(*) FROM games WHERE id <= ?", (window.edge,)))[0]
        await self.connection.execute(
            "UPDATE models SET weights = NULL WHERE weights IS NOT NULL AND promoted_at IS NULL"
            " AND id % ? != 0 AND id < (SELECT MAX(id) FROM models)"
            " AND id NOT IN (SELECT candidate_id FROM duels WHERE result IS NULL AND candidate_id IS NOT NULL)",
            (snapshot_every,),
        )

    async def _read_window(self, keep_positions: int, thin_every: int) -> "Window":
        """The window's edge, read from every game: the newest game past `keep_positions`
        positions counted from the newest (0: none)."""
        row = await self._one(
            "SELECT id, acc - length FROM (SELECT id, length, SUM(length) OVER (ORDER BY id DESC) AS acc FROM games)"
            " WHERE acc > ? LIMIT 1",
            (keep_positions,),
        )
        last = (await self._one("SELECT COALESCE(MAX(id), 0) FROM games"))[0]
        if row is None:
            after = (await self._one("SELECT COALESCE(SUM(length), 0) FROM games"))[0]
            return Window(edge=0, after=after, last=last, old=0, thin_every=thin_every)
        # Every game up to the edge is thinned now, once: the window then moves on from there.
        edge, after = row
        thin = "1" if thin_every == 0 else f"id % {int(thin_every)} != 0"
        await self.connection.execute(f"DELETE FROM games WHERE id <= ? AND {thin}", (edge,))
        old = (await self._one("SELECT COUNT(*) FROM games WHERE id <= ?", (edge,)))[0]
        return Window(edge=edge, after=after, last=last, old=old, thin_every=thin_every)

    async def thin_tables(self, limits: dict[str, int]) -> dict[str, int]:
        """Keeps each of THINNED's tables (events, metrics, tuning, config_history) within its
        row limit in `limits`: past it, thinned to half the limit (see `_thin`). Counts are
        kept as rows are added, so a call reads a table only when it is due. Returns the
        rows deleted, by table."""
        deleted = {}
        for table, most in limits.items():
            if table not in self.rows:
                self.rows[table] = (await self._one(f"SELECT COUNT(*) FROM {table}"))[0]
            if self.rows[table] <= most:
                continue
            before = (await self._one(f"SELECT COUNT(*) FROM {table}"))[0]
            if before > most:
                await self._thin(table, most, "at", series=THINNED[table], sessions=True)
            self.rows[table] = (await self._one(f"SELECT COUNT(*) FROM {table}"))[0]
            deleted[table] = before - self.rows[table]
        return deleted

    async def _thin(self, table: str, most: int, at: str, series: str = "", sessions=False, region="1") -> None:
        """Thins the rows of `table` (those in `region`) to about half of `most`: each series'
        rows spread evenly in time, one to a slice of the span, and the first and last of each
        run (a daemon start begins one; its start and stop events stay too). Where runs or
        series are so many that their ends alone pass `most`, they are dropped, in that order."""
        target = max(1, most // 2)
        plans = [(True, True), (False, True), (False, False)] if sessions else [(False, bool(series)), (False, False)]
        for by_run, by_series in plans:
            key = series if by_series and series else "0"
            lo, hi, kinds = await self._one(
                f"SELECT MIN({at}), MAX({at}), COUNT(DISTINCT {key}) FROM {table} WHERE {region}"
            )
            if lo is None:
                return
            width = max((hi - lo) * kinds / target, 1e-9)
            starts = RUN_STARTS if by_run else "SELECT 0 AS at WHERE 0"
            keep_events = " AND NOT (" + RUN_ENDS + ")" if by_run and table == "events" else ""
            await self.connection.execute(
                f"""
                WITH marks AS (
                    SELECT at, 1 AS start, NULL AS id, NULL AS series FROM ({starts})
                    UNION ALL SELECT {at}, 0, rowid, {key} FROM {table} WHERE {region}),
                runs AS (SELECT id, at, series, SUM(start) OVER (ORDER BY at) AS run FROM marks),
                ranked AS (
                    SELECT id, ROW_NUMBER() OVER (PARTITION BY series, run ORDER BY at, id) AS r,
                           COUNT(*) OVER (PARTITION BY series, run) AS n,
                           ROW_NUMBER() OVER (PARTITION BY series, CAST((at - ?) / ? AS INTEGER) ORDER BY at, id) AS b
                    FROM runs WHERE id IS NOT NULL)
                DELETE FROM {table} WHERE rowid IN (SELECT id FROM ranked WHERE r > 1 AND r < n AND b > 1)
                {keep_events}""",
                (lo, width),
            )
            if (await self._one(f"SELECT COUNT(*) FROM {table} WHERE {region}"))[0] <= most:
                return


def _row_id(cursor) -> int:
    """The id of the row an INSERT just made (sqlite3 types it Optional: None only before any INSERT)."""
    assert cursor.lastrowid is not None
    return cursor.lastrowid
