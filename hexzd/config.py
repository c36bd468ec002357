"""The run's configuration: `config.toml`, validated by pydantic.

Each key is either *live* (the daemon applies an edit within seconds) or
*fixed* for the run (board size, network shape: changing it would make the
state file inconsistent). `live(...)` and `fixed(...)` declare which, and the
description is the comment that `config.toml` carries on the key's line.
"""
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


def live(default, description: str, **kw):
    """A key the daemon applies while it runs."""
    return Field(default, description=description, json_schema_extra={"live": True}, **kw)


def fixed(default, description: str, **kw):
    """A key fixed for the life of a state file."""
    return Field(default, description=description, json_schema_extra={"live": False}, **kw)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GameConfig(Section):
    """[game]: the rules."""

    board_size: int = fixed(5, "board side n, 2..19", ge=2, le=19)
    swap: bool = fixed(False, "allow the swap (pie) rule as White's first move")


class SearchConfig(Section):
    """[search]: MCTS settings for self-play."""

    sims: int = live(64, "simulations per move (the tuner moves it within [tune] bounds)", ge=1, le=100_000)
    c_puct: float = live(1.5, "PUCT exploration constant", gt=0)
    fpu_reduction: float = live(0.25, "an unvisited child's value is its parent's minus this", ge=0, le=2)
    dirichlet_alpha: float = live(0.3, "root noise concentration; ~10/legal moves is usual", gt=0)
    dirichlet_fraction: float = live(0.25, "share of root prior replaced by noise", ge=0, le=1)
    temperature_moves: int = live(4, "plies sampled by visit count; later plies take the most visited", ge=0)
    gumbel: bool = live(False, "Gumbel root selection with sequential halving (small budgets)")
    gumbel_actions: int = live(16, "actions considered at the root by Gumbel search", ge=1)
    rollouts: int = live(1, "random fills per leaf before the first network exists", ge=1, le=64)


class ModelConfig(Section):
    """[model]: the network's shape, fixed for the run, and how workers run it."""

    blocks: int = fixed(4, "residual blocks in the tower", ge=1, le=64)
    channels: int = fixed(32, "channels per convolution", ge=4, le=1024)
    backend: Literal["auto", "eager", "cpu", "cuda", "mps", "tensorrt"] = live(
        "auto", "inference backend; auto times each available one at start and keeps the fastest"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = live(
        "auto", "inference precision; auto tries those the backend offers (int8: tensorrt only)"
    )
    threads: int = live(1, "torch CPU threads per process that runs the network", ge=1, le=256)


class TrainConfig(Section):
    """[train]: the optimiser and the replay window."""

    batch_size: int = live(256, "positions per training step", ge=1)
    optimizer: Literal["adamw", "sgd"] = fixed("adamw", "adamw, or sgd with momentum")
    lr: float = live(2e-3, "peak learning rate", gt=0)
    lr_schedule: Literal["constant", "cosine"] = live(
        "cosine", "after warm-up: constant, or a cosine from lr down to lr * lr_final"
    )
    warmup_steps: int = live(100, "steps of linear warm-up from 0 to lr", ge=0)
    decay_steps: int = live(20_000, "steps of the cosine decay after warm-up; lr_final after that", ge=1)
    lr_final: float = live(0.1, "the cosine's end, as a fraction of lr", ge=0, le=1)
    momentum: float = live(0.9, "sgd momentum, or adamw's beta1", ge=0, lt=1)
    weight_decay: float = live(1e-4, "decay of conv and linear weights (decoupled for adamw)", ge=0)
    value_weight: float = live(1.0, "weight of the value MSE against the policy cross-entropy", ge=0)
    window: int = live(100_000, "positions in the sliding replay window", ge=1)
    min_positions: int = live(2_000, "positions in the window before the first step", ge=1)
    reuse: float = live(4.0, "target times each position is trained on, on average", gt=0)
    snapshot_every: int = live(500, "steps between candidate snapshots", ge=1)
    device: Literal["auto", "cpu", "cuda", "mps"] = fixed("auto", "where the trainer runs; auto: cuda, mps, then cpu")
    threads: int = live(1, "torch CPU threads for the trainer", ge=1, le=256)
    seed: int = fixed(0, "seed of the trainer's sampling and initial weights")
    poll_seconds: float = live(2.0, "wait between looks for new games while the trainer is ahead", gt=0)


class Config(BaseModel):
    """The whole of config.toml."""

    model_config = ConfigDict(extra="forbid")

    game: GameConfig = GameConfig()
    search: SearchConfig = SearchConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()


def load(path: Path) -> Config:
    """Reads and validates a config file. Raises ValueError naming the key."""
    text = Path(path).read_text()
    try:
        return Config.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from None
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        line = line_of(text, first["loc"])
        where = f"{path}:{line}" if line else str(path)
        raise ValueError(f"{where}: {key}: {first['msg']}") from None


def line_of(text: str, loc: tuple) -> int | None:
    """The 1-based line that sets key loc = (section, key), if the file has it.

    None when unknown: a made-up line number is worse than none.
    """
    section, key = (str(loc[0]), str(loc[1])) if len(loc) >= 2 else (None, str(loc[0]))
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            if section is None and current == key:
                return number
        elif current == section and line.split("=", 1)[0].strip() == key:
            return number
    return None


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, int):
        return f"{value:_}" if abs(value) >= 10_000 else str(value)
    return repr(value)


def default_toml() -> str:
    """The default config.toml: every key on its own line, with its comment.

    The repository's config.toml is exactly this text (a test checks), so
    the file documents the code that reads it and cannot drift from it.
    """
    lines = ["# hexzd run configuration. live: applied while the daemon runs;",
             "# fixed: set when a state file is created and kept for its life.", ""]
    for section, field in Config.model_fields.items():
        model = field.annotation
        lines.append(f"[{section}]  # {model.__doc__.split(':', 1)[1].strip()}")
        for key, info in model.model_fields.items():
            kind = "live" if info.json_schema_extra["live"] else "fixed"
            setting = f"{key} = {_toml_value(info.default)}"
            lines.append(f"{setting:<28} # {kind}: {info.description}")
        lines.append("")
    return "\n".join(lines)
