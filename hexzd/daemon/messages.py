"""The messages between the daemon, its workers and its clients.

Every message is one msgpack map with a protocol version `v` and a `kind`;
its fields are checked against the kind's pydantic model. A frame that does
not decode, has another version, an unknown kind or a bad field raises
BadMessage, which the receiver logs and drops: a stray or corrupt message
never stops the daemon.

Sockets (endpoints in the run directory, see hexzd.daemon.rundir):
    results  PUSH (workers) -> PULL (daemon): game, snapshot, match_start,
             match_game, match_end, checking, perfect_play, metrics, event, hello, live,
             nodes
    updates  PUB (daemon) -> SUB (workers): best, config, pause, stop
    duels    not a message: the daemon writes a row into the `duels` table, the
             duel worker polls it (the table is the queue that survives restarts)
    control  REQ/DEALER (clients) -> ROUTER (daemon): request -> reply
"""

from typing import Literal

import msgpack
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hexzd.evaluation import outcome

VERSION = 1


class BadMessage(ValueError):
    """A frame that is not a valid message of this protocol version."""


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- results: workers to daemon ---------------------------------------------


class Hello(Message):
    worker: str
    pid: int


class Game(Message):
    worker: str
    model_id: int | None  # None: random-rollout MCTS
    board_size: int = Field(ge=2, le=19)
    sims: int = Field(ge=1)
    moves: str
    winner: Literal[1, 2]
    length: int = Field(ge=1)
    policy: bytes
    evals: int = Field(ge=0)  # network evaluations spent on the game (0 with rollouts)
    seconds: float = Field(ge=0)  # accelerator-or-CPU time of the worker, per game
    node: str | None = Field(default=None, max_length=100)  # the Ray node that played it; None: this machine
    uid: str | None = Field(default=None, max_length=100)  # `ACTOR:SEQ` from a cluster actor: stored once


class SnapshotMade(Message):
    """The trainer's new snapshot (hexzd.nn.snapshot.Snapshot as bytes) and its counters."""

    train_step: int = Field(ge=0)
    positions_seen: int = Field(ge=0)
    samples_trained: int = Field(ge=0)
    params: int = Field(ge=0)
    flops_per_eval: int = Field(ge=0)
    train_flops: float = Field(ge=0)
    train_seconds: float = Field(ge=0)  # the trainer's busy time since it started training
    weights: bytes  # Snapshot.to_bytes() without optimizer state: what players load
    checkpoint: bytes  # the full Snapshot: what the trainer resumes from


class MatchStart(Message):
    """The duel worker begins (or resumes) a match; a crash before its end counts against it."""

    duel_id: int


class Checking(Message):
    """The duel worker begins (done: ends) a model's check against perfect play; a crash
    in between counts against the check."""

    model_id: int
    done: bool = False


class MatchGame(Message):
    duel_id: int
    pair: int = Field(ge=0)
    moves: str
    winner: Literal[1, 2]
    candidate_colour: Literal[1, 2]


class MatchEnd(Message, outcome.MatchEnd):
    """A match's verdict (its fields: hexzd.evaluation.outcome.MatchEnd), and which match it ended."""

    duel_id: int
    cpu_seconds: float | None = None  # the duel worker's CPU time on it (the session that finished it)


class PerfectPlay(Message):
    """One model at one simulation count against perfect play (hexzd/evaluation/perfect.py)."""

    model_id: int
    sims: int = Field(ge=0)  # 0: the raw policy
    seed: int
    positions: int = Field(ge=1)  # test positions, won and lost for the player to move
    won: int = Field(ge=0)  # won for the player to move: where the model's moves are judged
    kept: int = Field(ge=0)  # of those, where its move keeps the win
    converted: int = Field(ge=0)  # where it wins the game against perfect defence
    value_sign: float | None = Field(ge=0, le=1)  # share of positions whose raw value sign is right


class Live(Message):
    """One self-play game in progress, at most once a second per worker: what the dashboard draws.

    `moves` is the game so far; `visits` the search's visit shares of the next
    move (float32, one per cell, row-major), which is `chosen` (a cell index).
    Not stored: the daemon keeps the latest per worker for `status`.
    """

    worker: str
    board_size: int = Field(ge=2, le=19)
    moves: str
    visits: bytes
    chosen: int = Field(ge=0)
    model_id: int | None
    sims: int = Field(ge=1)
    backend: str  # the network's backend and precision, or "random rollouts"


class Node(Message):
    """One Ray node's self-play, as the cluster worker sees it (hexzd.daemon.cluster)."""

    node: str  # Ray's node id
    address: str  # its IP address
    cpus: float = Field(ge=0)
    gpus: float = Field(ge=0)
    actors: int = Field(ge=0)  # self-play actors on it now
    batch: int = Field(ge=1)  # games per group on it (each node's tuner sets its own)
    games_per_s: float = Field(ge=0)  # over the last few seconds
    evals_per_s: float = Field(ge=0)
    games: int = Field(ge=0)  # games it delivered since the cluster worker started


class Nodes(Message):
    """The cluster worker's nodes, about once a second: shown by `status` and the dashboard, not stored."""

    address: str  # [cluster] address it joined
    nodes: list[Node]


class Metrics(Message):
    source: str
    values: dict[str, float]


class Event(Message):
    level: Literal["debug", "info", "warning", "error"]
    source: str
    message: str


# -- updates: daemon to workers -----------------------------------------------


class Best(Message):
    model_id: int


class ConfigUpdate(Message):
    config: dict  # Config.model_dump(): already validated by the daemon


class Pause(Message):
    paused: bool


class Stop(Message):
    pass


# -- control: clients to daemon ------------------------------------------------


class Request(Message):
    command: Literal["status", "stop", "pause", "resume", "reload"]  # reload: read config.toml now


class Reply(Message):
    ok: bool
    status: dict = {}
    error: str | None = None


KINDS: dict[str, type[Message]] = {
    "hello": Hello,
    "game": Game,
    "snapshot": SnapshotMade,
    "match_start": MatchStart,
    "match_game": MatchGame,
    "match_end": MatchEnd,
    "metrics": Metrics,
    "event": Event,
    "best": Best,
    "config": ConfigUpdate,
    "pause": Pause,
    "stop": Stop,
    "request": Request,
    "reply": Reply,
    "perfect_play": PerfectPlay,
    "checking": Checking,
    "live": Live,
    "nodes": Nodes,
}
KIND_OF = {model: kind for kind, model in KINDS.items()}


def encode(message: Message) -> bytes:
    return msgpack.packb({"v": VERSION, "kind": KIND_OF[type(message)], **message.model_dump()}, use_bin_type=True)


def decode(frame: bytes) -> Message:
    """The message in a frame. Raises BadMessage saying what is wrong with it."""
    try:
        data = msgpack.unpackb(frame, raw=False)
    except Exception as e:  # msgpack raises several unrelated types for garbage
        raise BadMessage(f"not msgpack: {e}") from None
    if not isinstance(data, dict):
        raise BadMessage(f"a message is a map, not {type(data).__name__}")
    version, kind = data.pop("v", None), data.pop("kind", None)
    if version != VERSION:
        raise BadMessage(f"protocol version {version!r}, expected {VERSION}")
    if kind not in KINDS:
        raise BadMessage(f"unknown kind {kind!r}")
    try:
        return KINDS[kind].model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise BadMessage(f"{kind}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
