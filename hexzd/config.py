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
    """[model]: the network's shape, fixed for the run."""

    blocks: int = fixed(4, "residual blocks in the tower", ge=1, le=64)
    channels: int = fixed(32, "channels per convolution", ge=4, le=1024)


class TrainConfig(Section):
    """[train]: the optimiser and the replay window."""

    batch_size: int = live(256, "positions per training step", ge=1)
    lr: float = live(2e-3, "peak learning rate", gt=0)
    weight_decay: float = live(1e-4, "AdamW weight decay", ge=0)
    window: int = live(100_000, "positions in the sliding replay window", ge=1)
    reuse: float = live(4.0, "target times each position is trained on, on average", gt=0)
    snapshot_every: int = live(500, "steps between candidate snapshots", ge=1)


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
        raise ValueError(f"{path}: {key}: {first['msg']}") from None
