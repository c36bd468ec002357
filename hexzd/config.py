"""The run's configuration: `config.toml`, validated by pydantic.

Each key is either *live* (the daemon applies an edit within seconds) or
*fixed* for the run (board size, network shape: changing it would make the
state file inconsistent). `live(...)` and `fixed(...)` declare which, and the
description is the comment that `config.toml` carries on the key's line.
"""

import importlib.util
import json
import math
import re
import shlex
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, core_schema


def live(default, description: str, **kw):
    """A key the daemon applies while it runs."""
    return Field(default, description=description, json_schema_extra={"live": True}, **kw)


def fixed(default, description: str, **kw):
    """A key fixed for the life of a state file."""
    return Field(default, description=description, json_schema_extra={"live": False}, **kw)


def is_live(info: FieldInfo) -> bool:
    """Whether a key declared with live() or fixed() is live."""
    return isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("live") is True


@dataclass(frozen=True)
class AutoInt:
    """An integer from low to high, or "auto": a size that follows the board (Config resolves it).

    Used as `Annotated[Auto, AutoInt(1, 64)]`: a bound of its own, so that the
    reference pages and the validation read the same numbers."""

    low: int
    high: int | None = None

    def check(self, value):
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError('should be an integer or "auto"')
        if value < self.low or (self.high is not None and value > self.high):
            raise ValueError(
                f"should be from {self.low} to {self.high}" if self.high else f"should be at least {self.low}"
            )
        return value

    def __get_pydantic_core_schema__(self, source, handler):
        return core_schema.no_info_plain_validator_function(self.check)


Auto = int | Literal["auto"]


class Section(BaseModel):
    # No nan or inf: every float is a finite number, within its key's bounds.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def clashes(*rules: tuple[bool, str, str]) -> None:
    """Raises one error for the cross-field rules that are broken: each rule (broken, key, message).

    A model validator's error names its section, not a key; the keys ride in the
    error's context, and `problems` reports each at its own key and line."""
    broken = [(key, message) for bad, key, message in rules if bad]
    if broken:
        text = "; ".join(f"{key}: {message}" for key, message in broken)
        raise PydanticCustomError("clash", "{text}", {"text": text, "clashes": broken})


class GameConfig(Section):
    """[game]: the rules."""

    board_size: int = fixed(5, "board side n, 2..19", ge=2, le=19)
    swap: bool = fixed(False, "allow the swap (pie) rule as White's first move")


class SearchConfig(Section):
    """MCTS settings: self-play's, and the base of the duel's."""

    sims: int = live(64, "simulations per move", ge=1, le=100_000)
    c_puct: float = live(1.5, "PUCT exploration constant", gt=0, le=100)
    fpu_reduction: float = live(0.25, "an unvisited child's value is its parent's minus this", ge=0, le=2)
    dirichlet_alpha: float = live(0.3, "root noise concentration; ~10/legal moves is usual", gt=0, le=100)
    dirichlet_fraction: float = live(0.25, "share of root prior replaced by noise", ge=0, le=1)
    temperature_moves: int = live(4, "plies sampled by visit count; later plies take the most visited", ge=0, le=1000)
    gumbel: bool = live(False, "Gumbel root selection with sequential halving (small budgets)")
    gumbel_actions: int = live(16, "actions considered at the root by Gumbel search", ge=1, le=1000)
    rollouts: int = live(1, "random fills per leaf before the first network exists", ge=1, le=64)


class SelfplayConfig(SearchConfig):
    """[selfplay]: the self-play workers and their search."""

    # Self-play's own defaults (duels take them too; hexzd htp and perfect play PUCT):
    # Gumbel search at few simulations (Danihelka et al. 2022) gives sound policy targets
    # from fewer evaluations, so more positions per CPU-second. With the mild duel gate,
    # on 5x5 it converted every won opening in 3 seeds of 3 within 5 minutes (median 2.4
    # minutes), against 2 of 3 (3.4 minutes) for PUCT at 64 simulations.
    sims: int = live(32, "simulations per move", ge=1, le=100_000)
    gumbel: bool = live(True, "Gumbel root selection with sequential halving (small budgets)")
    workers: int = live(1, "self-play worker processes per GPU in device.gpus (on the CPU: in all)", ge=0, le=256)
    batch: int = live(32, "games per group; each worker keeps `groups` groups in flight", ge=1, le=65_536)
    groups: int = live(
        2, "groups per worker, two or more per search thread: one searches while another is evaluated", ge=1, le=512
    )
    threads: int = live(
        1, "search threads per self-play worker, sharing its inference service; on a GPU, a core each", ge=1, le=256
    )
    random_first_moves: float = live(
        1.0, "share of games opened on a uniformly random cell, so that every opening is learned", ge=0, le=1
    )


class DuelConfig(Section):
    """[duel]: candidate against best, paired games, stopped by an SPRT."""

    sims: int = live(64, "simulations per move in duels (fixed within a duel)", ge=1, le=100_000)
    pairs: int = live(8, "pairs of games in flight; each opening is played with both colours", ge=1, le=4096)
    max_pairs: int = live(100, "a duel still undecided after this many pairs is a rejection", ge=1, le=100_000)
    # A mild gate, as KataGo's: promote unless the candidate is clearly weaker. A gate
    # that asks for +100 Elo stalls between near-equal strong networks (on 5x5 nothing
    # was promoted after minute 3.4 of 5, in 3 seeds of 3), and self-play falls behind.
    # Within +-1000 Elo a score is well inside (0, 1), where the SPRT's model holds (hexzd.evaluation.sprt).
    elo0: float = live(
        -100.0,
        "SPRT H0: the candidate is this many Elo stronger, or less (negative: weaker); below elo1",
        ge=-1000,
        le=1000,
    )
    elo1: float = live(
        0.0,
        "SPRT H1: the candidate is this many Elo stronger, or more; 0: no weaker is enough",
        ge=-1000,
        le=1000,
    )
    alpha: float = live(0.05, "SPRT: chance of promoting a candidate no stronger than elo0", gt=0, lt=0.5)
    beta: float = live(0.05, "SPRT: chance of rejecting a candidate as strong as elo1", gt=0, lt=0.5)
    # Each promoted snapshot is rated before the next is dueled, for a while: a snapshot
    # needs about 185 even games for +-50 Elo, and the mild gate promotes near-equal
    # networks every half minute, faster than ratings can follow (hexzd.daemon.scheduler).
    # Measured against off (docs/results.md, "precise ratings first"): intervals 2-3x narrower on 5x5
    # and 7x7, strength the same within the seeds' spread (5x5, 3 seeds) and against MCTS
    # @10,000 on 7x7 (98 of 98 at minute 28), evaluation still within cpu_share.
    rating_wait: float = live(
        0.25,
        "a promotion duel waits for the newest promoted snapshot's interval to reach ratings.target_elo,"
        " at most this share of the run's age and 10 minutes (0: never)",
        ge=0,
        lt=1,
    )

    @model_validator(mode="after")
    def _hypotheses_in_order(self):
        clashes((self.elo0 >= self.elo1, "elo0", f"should be below elo1 ({self.elo1}), not {self.elo0}"))
        return self


ENGINE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class EvaluationConfig(Section):
    """[evaluation]: what promotion duels, rating matches and perfect-play checks share."""

    cpu_share: float = live(
        0.2,
        "most of the machine's CPU that evaluation (promotion duels, rating matches, perfect play) may use",
        ge=0.01,
        le=1,
    )


class RatingsConfig(Section):
    """[ratings]: reference players anchor one Elo scale across runs and board sizes."""

    references: list[Annotated[int, Field(ge=1, le=100_000)]] = live(
        [100, 200, 400, 800, 1600, 3200, 6400],
        "random-rollout MCTS players, by simulations per move, each different; the first is 0 Elo",
        min_length=1,
        max_length=32,
    )
    # Many pairs at once make a game cheap (5x5, 64 sims: 0.28 CPU-s at 4 pairs in flight,
    # 0.05 at 64), and a promotion duel no longer waits for a match's end: it runs inside.
    match_pairs: int = live(32, "pairs of games in a rating match, all played at once", ge=1, le=1024)
    share: float = live(
        0.6,
        "share of evaluation's CPU time for rating matches and perfect-play checks while candidates wait (0: none)",
        ge=0,
        le=1,
    )
    ladder_pairs: int = live(
        2, "pairs each two neighbouring references play first; then matchmaking picks", ge=0, le=1000
    )
    target_elo: float = live(
        50.0, "matchmaking aims at 95% intervals within +-this for promoted snapshots and the ladder", ge=1, le=1000
    )
    perfect_positions: int = live(
        200, "positions on which each promoted model meets perfect play, boards up to 5x5 (0: none)", ge=0, le=100_000
    )
    perfect: bool = live(True, "perfect play (the solver) tops the reference ladder on boards up to 5x5 without swap")
    ladder_file: str = live(
        "~/.cache/hexzd/ladder.sqlite",
        'where the reference ladder\'s games are kept across runs; a fresh state file starts with them ("": none)',
    )
    engines: dict[str, str] = live(
        {}, 'outside HTP engines rated on the scale: { name = "command line" }, MoHex say (runs without swap)'
    )

    @field_validator("references")
    @classmethod
    def _references_differ(cls, references: list[int]) -> list[int]:
        twice = sorted({sims for sims in references if references.count(sims) > 1})
        if twice:
            raise ValueError(f"each reference once, not {', '.join(map(str, twice))} again")
        return references

    @field_validator("ladder_file")
    @classmethod
    def _a_path(cls, where: str) -> str:
        if "\0" in where:
            raise ValueError("a path has no NUL character")
        return where

    @field_validator("engines")
    @classmethod
    def _engine_names_and_commands(cls, engines: dict[str, str]) -> dict[str, str]:
        """A name is a word (it names the player `engine NAME` and its log file); a command, a command line."""
        for name, command in engines.items():
            if not ENGINE_NAME.fullmatch(name):
                raise ValueError(f"engine name {name!r}: letters, digits, - and _ only, starting with a letter")
            if name == "perfect":  # hexzd.evaluation.scale.PERFECT: config sits below evaluation
                raise ValueError("engine name 'perfect' is taken: it names the solver's perfect player")
            try:
                words = shlex.split(command)
            except ValueError as e:
                raise ValueError(f"engine {name}: {e}") from None
            if not words:
                raise ValueError(f"engine {name}: the command line is empty")
            if "\0" in command:
                raise ValueError(f"engine {name}: a command line has no NUL character")
        return engines


class BudgetConfig(Section):
    """[budget]: the run stops cleanly when one is spent (0: no limit)."""

    hours: float = live(0.0, "wall-clock hours of the run, over all its restarts", ge=0, le=100_000)
    games: int = live(0, "self-play games in the state file", ge=0, le=10**12)
    positions: int = live(0, "self-play positions in the state file", ge=0, le=10**15)
    pflops: float = live(0.0, "self-play plus training compute, in PFLOP", ge=0, le=10**12)


class RetentionConfig(Section):
    """[retention]: keeps the state file and the run directory bounded on long runs."""

    window_multiple: float = live(2.0, "games kept in full: this many training windows of positions", ge=1, le=1000)
    thin_keep: float = live(0.05, "share of the older games kept (evenly spread), for analysis", ge=0, le=1)
    snapshot_every: int = live(
        10, "weights kept for every Nth non-promoted snapshot; others pruned", ge=1, le=1_000_000
    )
    old_games: int = live(
        100_000, "most older games kept after thin_keep's thinning; beyond, thinned evenly again", ge=0, le=10**9
    )
    metrics_rows: int = live(
        200_000, "most metric samples kept: older ones thinned evenly, each series' ends kept", ge=1000, le=10**9
    )
    events_rows: int = live(20_000, "most events kept, thinned the same way", ge=100, le=10**9)
    tuning_rows: int = live(10_000, "most tuner decisions kept, thinned the same way", ge=100, le=10**9)
    config_rows: int = live(1000, "most config.toml versions kept, thinned the same way", ge=10, le=10**6)
    log_mb: float = live(
        16.0, "a log past this many MB is rotated: the daemon's, each worker's, each engine's", ge=0.01, le=10**6
    )
    log_files: int = live(3, "rotated logs kept of each (NAME.log.1 the newest)", ge=0, le=1000)


class LoggingConfig(Section):
    """[logging]: the run's curves written for other tools too; the state file stays the source."""

    tensorboard: str = live(
        "",
        "folder of TensorBoard event files kept up to date from the state file, relative to this file's folder"
        ' ("": none; the tensorboard extra)',
    )

    @field_validator("tensorboard")
    @classmethod
    def _tensorboard_installed(cls, folder: str) -> str:
        if "\0" in folder:
            raise ValueError("a path has no NUL character")
        if folder and not installed("tensorboard"):
            raise ValueError("needs the tensorboard package, which is not installed: pip install 'hexzd[tensorboard]'")
        return folder


def installed(package: str) -> bool:
    """Whether `package` can be imported, found without importing it."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules, one that cannot load
        return False


class DaemonConfig(Section):
    """[daemon]: supervision, logging and endpoints."""

    tcp_port: int = fixed(
        0,
        "0: ipc sockets in the run directory only; else also a control port on 127.0.0.1, CURVE only"
        " (keys: `hexzd keys`)",
        ge=0,
        le=65_535,
    )
    progress_seconds: float = live(10.0, "seconds between progress lines and metric samples", ge=0.1, le=3600)
    restart_backoff: float = live(
        1.0, "first wait before restarting a crashed worker; doubles, up to 60 s", ge=0.01, le=60
    )


CLUSTER_ADDRESS = re.compile(r"(auto|(ray://)?[A-Za-z0-9.\-\[\]:]+:\d{1,5})")


class ClusterConfig(Section):
    """[cluster]: self-play on a Ray cluster beside this machine's (the `cluster` extra)."""

    address: str = live(
        "",
        'empty: this machine alone, Ray never imported; "auto" or "ray://host:port": the Ray cluster to join',
        max_length=300,
    )
    batch_seconds: float = live(
        2.0, "seconds of self-play a node's actor plays before it hands its finished games back", ge=0.1, le=600
    )

    @field_validator("address")
    @classmethod
    def _an_address(cls, address: str) -> str:
        if address and not CLUSTER_ADDRESS.fullmatch(address):
            raise ValueError(f'should be empty, "auto", "ray://host:port" or "host:port", not {address!r}')
        return address


class ModelConfig(Section):
    """[model]: the network's shape, fixed for the run."""

    blocks: Annotated[Auto, AutoInt(1, 64)] = fixed(
        "auto", "residual blocks; auto: max(4, ceil((n - 2) / 2)), so features span the board: 4 to 10x10, 9 at 19x19"
    )
    channels: Annotated[Auto, AutoInt(4, 1024)] = fixed(
        "auto", "channels per convolution; auto: max(32, 16 * ceil(2n / 7)): 32 to 7x7, 48 at 9x9, 96 at 19x19"
    )


# The precisions each inference backend runs (hexzd.nn.backends; config sits below it): a
# worker asked for another one fails at its every start.
PRECISIONS = {
    "auto": ("fp32", "bf16", "fp16", "int8"),
    "eager": ("fp32",),
    "cpu": ("fp32",),
    "cuda": ("fp32", "bf16", "fp16"),
    "mps": ("fp32", "fp16"),
    "tensorrt": ("fp16", "int8"),
}


class DeviceConfig(Section):
    """[device]: where and how the networks run."""

    backend: Literal["auto", "eager", "cpu", "cuda", "mps", "tensorrt"] = live(
        "auto", "inference backend; auto times each available one at start and keeps the fastest"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = live(
        "auto",
        "inference precision; auto tries those the backend offers; else one it runs: eager and cpu fp32,"
        " cuda fp32 bf16 fp16, mps fp32 fp16, tensorrt fp16 int8",
    )
    threads: int = live(1, "torch CPU threads per self-play or duel process", ge=1, le=256)
    gpus: Literal["all"] | list[Annotated[int, Field(ge=0, le=1023)]] = fixed(
        "all", 'the GPUs self-play spreads over: "all", or CUDA indices such as [0, 1]'
    )
    trainer: Literal["auto", "cpu", "cuda", "mps"] = fixed(
        "auto", "where the trainer runs; auto: the first of device.gpus, mps, then cpu"
    )
    trainer_threads: int = live(1, "torch CPU threads for the trainer", ge=1, le=256)

    @model_validator(mode="after")
    def _a_precision_the_backend_runs(self):
        runs = PRECISIONS[self.backend]
        bad = self.precision != "auto" and self.precision not in runs
        clashes(
            (bad, "precision", f"the {self.backend} backend runs {', '.join(runs)} (or auto), not {self.precision}")
        )
        return self


class TuneConfig(Section):
    """[tune]: the auto-tuner moves simulations and batch sizes within these bounds."""

    enabled: bool = live(True, "let the tuner move selfplay.sims and selfplay.batch")
    # Within selfplay.sims' and selfplay.batch's own bounds: the tuner sets those keys.
    sims_min: int = live(16, "fewest simulations per move the tuner may set; at most sims_max", ge=1, le=100_000)
    sims_max: int = live(800, "most simulations per move the tuner may set", ge=1, le=100_000)
    batch_min: int = live(8, "fewest games per self-play group the tuner may set; at most batch_max", ge=1, le=65_536)
    batch_max: int = live(1024, "most games per self-play group the tuner may set", ge=1, le=65_536)
    interval: float = live(30.0, "seconds between the tuner's decisions", ge=1, le=86_400)
    gpu_target: float = live(0.9, "accelerator utilisation the batch size aims for", gt=0, le=1)

    @model_validator(mode="after")
    def _bounds_in_order(self):
        clashes(
            (
                self.sims_min > self.sims_max,
                "sims_min",
                f"should be at most sims_max ({self.sims_max}), not {self.sims_min}",
            ),
            (
                self.batch_min > self.batch_max,
                "batch_min",
                f"should be at most batch_max ({self.batch_max}), not {self.batch_min}",
            ),
        )
        return self


class TrainConfig(Section):
    """[train]: the optimiser and the replay window."""

    batch_size: int = live(256, "positions per training step", ge=1, le=65_536)
    optimizer: Literal["adamw", "sgd"] = fixed("adamw", "adamw, or sgd with momentum")
    lr: float = live(2e-3, "peak learning rate", gt=0, le=1)
    lr_schedule: Literal["constant", "cosine"] = live(
        "cosine", "after warm-up: constant, or a cosine from lr down to lr * lr_final"
    )
    warmup_steps: int = live(100, "steps of linear warm-up from 0 to lr", ge=0, le=10**8)
    decay_steps: int = live(20_000, "steps of the cosine decay after warm-up; lr_final after that", ge=1, le=10**9)
    lr_final: float = live(0.1, "the cosine's end, as a fraction of lr", ge=0, le=1)
    momentum: float = live(0.9, "sgd momentum, or adamw's beta1", ge=0, lt=1)
    weight_decay: float = live(1e-4, "decay of conv and linear weights (decoupled for adamw)", ge=0, le=1)
    value_weight: float = live(1.0, "weight of the value MSE against the policy cross-entropy", ge=0, le=100)
    # The trainer holds the whole window in memory: about 2 KB a position at 19x19.
    window: Annotated[Auto, AutoInt(1, 10_000_000)] = live(
        "auto",
        "positions in the sliding replay window, held in memory; auto: max(100_000, 2_000 * n * n): 162_000 at 9x9",
    )
    min_positions: int = live(2_000, "positions in the window before the first step", ge=1, le=10_000_000)
    reuse: float = live(4.0, "target times each position is trained on, on average", gt=0, le=1_000_000)
    snapshot_every: int = live(200, "steps between candidate snapshots", ge=1, le=1_000_000)
    seed: int = fixed(0, "seed of the trainer's sampling and initial weights", ge=0, le=2**32 - 1)
    poll_seconds: float = live(2.0, "wait between looks for new games while the trainer is ahead", ge=0.1, le=600)


class Config(BaseModel):
    """The whole of config.toml."""

    model_config = ConfigDict(extra="forbid")

    game: GameConfig = GameConfig()
    selfplay: SelfplayConfig = SelfplayConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    duel: DuelConfig = DuelConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tune: TuneConfig = TuneConfig()
    ratings: RatingsConfig = RatingsConfig()
    budget: BudgetConfig = BudgetConfig()
    device: DeviceConfig = DeviceConfig()
    retention: RetentionConfig = RetentionConfig()
    logging: LoggingConfig = LoggingConfig()
    daemon: DaemonConfig = DaemonConfig()
    cluster: ClusterConfig = ClusterConfig()

    @model_validator(mode="after")
    def _scale_with_the_board(self):
        # "auto" sizes follow the board, so that a user who sets board_size = 9 gets sensible
        # choices from the same defaults. 4x32 and 100k positions are what the 5x5 and 7x7
        # measurements ran with on a 2-core CPU (docs/results.md, "how strong, how fast on 5x5"); larger boards
        # extrapolate: enough blocks that each cell's features reach across the board (a 3x3
        # stem and two 3x3 convolutions a block see 1 + 2 * blocks cells away), channels in
        # proportion to the side, and a window of about as many games (positions ~ n * n).
        self.model = self.model.model_copy(update=_resolved(self.model, scaled_shape(self.game.board_size)))
        self.train = self.train.model_copy(
            update=_resolved(self.train, {"window": scaled_window(self.game.board_size)})
        )
        return self

    @field_validator("ratings")
    @classmethod
    def _engines_without_swap(cls, ratings: RatingsConfig, info: ValidationInfo) -> RatingsConfig:
        # MoHex's swap-pieces keeps the stone where hexzd's moves it, and most engines have no
        # swap at all: outside engines play the runs without it (docs/guides/htp-play.md, "Where hexzd differs").
        game = info.data.get("game")
        if ratings.engines and game is not None and game.swap:
            raise ValueError("engines play runs without the swap rule only ([game] swap = true here)")
        return ratings


def scaled_shape(n: int) -> dict[str, int]:
    """The network for an n x n board when [model] says "auto"."""
    return {"blocks": max(4, math.ceil((n - 2) / 2)), "channels": max(32, 16 * math.ceil(2 * n / 7))}


def scaled_window(n: int) -> int:
    """The replay window, in positions, for an n x n board when [train] says "auto"."""
    return max(100_000, 2_000 * n * n)


def _resolved(section: BaseModel, sizes: dict[str, int]) -> dict[str, int]:
    return {key: value for key, value in sizes.items() if getattr(section, key) == "auto"}


def sections() -> list[tuple[str, type[Section]]]:
    """The config's sections in file order, each with its model: ("game", GameConfig), ..."""
    return [(name, cast(type[Section], field.annotation)) for name, field in Config.model_fields.items()]


# Keys renamed since they were released: (section, key) -> its new (section, key). An old
# name still reads, with a notice; a file that sets both names is refused (which one meant?).
RENAMED = {
    ("selfplay", "games"): ("selfplay", "batch"),  # a group's batch; budget.games is a total
    ("duel", "cpu_share"): ("evaluation", "cpu_share"),  # it holds every evaluation, not duels alone
}


def renamed(data: dict, path="config.toml", line: Callable[[tuple], int | None] = lambda loc: None):
    """`data` with renamed keys under their new names, and a notice for each old name it used.

    Raises ValueError where a file sets a key under both names, one line each."""
    data, notices, both = _renamed(data, path, line)
    if both:
        raise ValueError("\n".join(both))
    return data, notices


def _renamed(data: dict, path, line: Callable[[tuple], int | None]) -> tuple[dict, list[str], list[str]]:
    """`renamed`'s data and notices, and the refusal of each key set under both names (its old
    name dropped, so that validation goes on to tell every other problem of the file)."""
    data = {section: dict(v) if isinstance(v, dict) else v for section, v in data.items()}
    notices, both = [], []
    for (section, key), (new_section, new_key) in RENAMED.items():
        old = data.get(section)
        if not isinstance(old, dict) or key not in old:
            continue
        new = data.setdefault(new_section, {})
        if not isinstance(new, dict):
            continue  # validation names the section
        if new_key in new:
            old.pop(key)
            message = f"now {new_section}.{new_key}, which this file sets too: remove one"
            both.append(str(refusal(path, line((section, key)), (section, key), message)))
            continue
        new[new_key] = old.pop(key)
        where = _where(path, line((section, key)))
        notices.append(f"{where}: {section}.{key} is now {new_section}.{new_key}; the old name reads until renamed")
    return data, notices, both


def stored(text: str) -> Config:
    """The config a state file was made with (`meta.config`, JSON), as this version reads it.

    A later hexzd may have moved or renamed keys since the file was made (the
    inference settings moved from [model] to [device]); what a state file
    keeps to is its fixed keys. So keys this version does not know are
    dropped and missing ones take their defaults, rather than refusing to
    open an older run.
    """
    data, _ = renamed(json.loads(text))
    known = {}
    for section, model in sections():
        values = data.get(section)
        if isinstance(values, dict):
            known[section] = {k: v for k, v in values.items() if k in model.model_fields}
    return _within_todays_bounds(known)


def _within_todays_bounds(data: dict) -> Config:
    """A state file's config, where a section that today's bounds or rules refuse takes the
    defaults for its live keys.

    Bounds and cross-field rules came after some runs were made; what a state
    file keeps to is its fixed keys, so those are still checked."""
    models = dict(sections())
    while True:
        try:
            return Config.model_validate(data)
        except ValidationError as e:
            dropped = False
            for section in {loc[0] for loc, _ in problems(e) if loc}:
                values = data.get(section)
                if section in models and isinstance(values, dict):
                    live_keys = [k for k in values if is_live(models[section].model_fields[k])]
                    data[section] = {k: v for k, v in values.items() if k not in live_keys}
                    dropped = dropped or bool(live_keys)
            if not dropped:
                raise


def read(path) -> str:
    """A config file's text, or a ValueError that says in one line why it cannot be read.

    TOML is UTF-8: a file saved in another encoding is refused, naming its line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read: {e.strerror or e}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}:{line}: not UTF-8 (byte 0x{data[e.start]:02x}): save the file as UTF-8") from None


def load(path: Path) -> Config:
    """Reads and validates a config file. Raises ValueError naming the key."""
    return parse(read(path), path)


def parse(text: str, path="config.toml") -> Config:
    """Validates a config file's text. Raises ValueError naming the key and line."""
    return checked(read_toml(text, path), path, lambda loc: line_of(text, loc))


def notices(text: str, path="config.toml") -> list[str]:
    """What a valid config file's text should change: old key names, each with its line."""
    return renamed(read_toml(text, path), path, lambda loc: line_of(text, loc))[1]


def checked(data: dict, path, line: Callable[[tuple], int | None]) -> Config:
    """A config's tables (a file's, or a sweep's run) as a Config, old key names read as the new.
    Raises ValueError with every problem, one a line: keys set under both names, then validation's."""
    data, _, both = _renamed(data, path, line)
    try:
        config = validate(Config, data, path, line)
    except ValueError as e:
        raise ValueError("\n".join([*both, str(e)])) from None
    if both:
        raise ValueError("\n".join(both))
    return config


def read_toml(text: str, path) -> dict:
    """A TOML file's tables, or a ValueError naming the file and where its syntax breaks."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None


def validate(model: type[BaseModel], data: dict, path, line: Callable[[tuple], int | None]):
    """`data` as a `model`, or a ValueError naming the file, line and key of each problem, one a line.

    line(loc) finds the line of pydantic's location of the problem: line_of
    for a config file; a sweep file, whose config keys sit under [set] and
    [grid], finds them its own way.
    """
    try:
        return model.model_validate(data)
    except ValidationError as e:
        refusals = [str(refusal(path, line(loc), loc, message)) for loc, message in problems(e)]
        raise ValueError("\n".join(refusals)) from None


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def problems(error: ValidationError) -> list[tuple[tuple, str]]:
    """Each key's problems as (loc, message), in order: a cross-field rule (`clashes`) at each
    key it names, and a key that fits no member of a union (device.gpus) once, not once a member."""
    found: dict[tuple, list[str]] = {}
    for e in error.errors():
        loc = tuple(p for p in e["loc"] if isinstance(p, int) or _KEY.fullmatch(p))  # drops union members
        if e["type"] == "clash":
            for key, message in e["ctx"]["clashes"]:
                found.setdefault((*loc, *key.split(".")), []).append(message)
        else:
            found.setdefault(loc, []).append(e["msg"])
    return [(loc, ", or ".join(dict.fromkeys(messages))) for loc, messages in found.items()]


def refusal(path, line: int | None, loc: tuple, message: str) -> ValueError:
    """The error every bad file gets: `file:line: key: message`, the line only when known."""
    return ValueError(f"{_where(path, line)}: {'.'.join(str(p) for p in loc)}: {message}")


def _where(path, line: int | None) -> str:
    return f"{path}:{line}" if line else str(path)


def fixed_changes(old: Config, new: Config, text: str, path="config.toml") -> str | None:
    """Why `new` may not replace `old` while a run goes on (each fixed key it changes, one a
    line), or None if it may.

    A fixed key (board size, network shape) is set when the state file is
    made; changing it would mix games and networks that do not fit together.
    """
    refusals = []
    for section in Config.model_fields:
        before, after = getattr(old, section), getattr(new, section)
        for key, info in type(before).model_fields.items():
            if not is_live(info) and getattr(before, key) != getattr(after, key):
                was, now = getattr(before, key), getattr(after, key)
                message = f"fixed for this run at {was!r}, not {now!r}: set it to {was!r}, or start a new state file"
                refusals.append(str(refusal(path, line_of(text, (section, key)), (section, key), message)))
    return "\n".join(refusals) or None


def tuned(config: Config, sims: int, batch: int) -> Config:
    """`config` with the tuner's selfplay.sims and selfplay.batch, validated as a whole
    (never model_copy, which skips validation): what the daemon hands the workers."""
    data = config.model_dump()
    data["selfplay"].update(sims=sims, batch=batch)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ValueError("; ".join(f"{'.'.join(map(str, loc))}: {message}" for loc, message in problems(e))) from None


def line_of(text: str, loc: tuple) -> int | None:
    """The 1-based line that sets the key at loc = (section, key), if the file has it.

    A key counts by its whole path, so quoted and dotted keys are found too:
    `"model.channels" = [8]` under [grid] sets grid.model.channels. A list
    item's loc (section, key, 2) is found at its key. None when unknown: a
    made-up line number is worse than none.
    """
    while loc and isinstance(loc[-1], int):
        loc = loc[:-1]
    wanted, table = _key_path(".".join(str(p) for p in loc)), ""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            table = _key_path(line.strip("[]"))
            if table == wanted:
                return number
        elif "=" in line:
            key = _key_path(line.split("=", 1)[0])
            if (f"{table}.{key}" if table else key) == wanted:
                return number
    return None


def _key_path(key: str) -> str:
    """A TOML key as its dotted path: `"model.channels"`, `model . channels` -> model.channels."""
    return ".".join(part.strip().strip("\"'") for part in key.split("."))


def toml_value(value) -> str:
    """A value as config.toml writes it: large integers with underscores."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }" if value else "{}"
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    return repr(value)


def default_toml() -> str:
    """The default config.toml: every key on its own line, with its comment.

    The repository's config.toml is exactly this text (a test checks), so
    the file documents the code that reads it and cannot drift from it.
    """
    lines = [
        "# hexzd run configuration. live: applied while the daemon runs;",
        "# fixed: set when a state file is created and kept for its life.",
        "",
    ]
    for section, model in sections():
        lines.append(f"[{section}]  # {(model.__doc__ or ':').split(':', 1)[1].strip()}")
        for key, info in model.model_fields.items():
            kind = "live" if is_live(info) else "fixed"
            setting = f"{key} = {toml_value(info.default)}"
            lines.append(f"{setting:<28} # {kind}: {info.description}")
        lines.append("")
    return "\n".join(lines)
