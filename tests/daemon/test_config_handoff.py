"""Whatever config edit the daemon accepts, every worker takes: a property, on generated edits.

The daemon validates an edit of config.toml (hexzd.config.parse), refuses a change of a
fixed key (fixed_changes), hands the tuner the new bounds, and writes the config in force
(in_force: the file's with the tuner's sims and batch) to the run directory and in a
ConfigUpdate. Each worker validates that again (hexzd.daemon.workers.worker_config). An
edit the daemon accepts and a worker refuses restarts the workers for ever; this test
throws generated edits (keys of every section, old key names, values of every type and
size, cross-field combinations, on boards of every size) at that path and asserts that
none is accepted by the one and refused by the other, and that the worker gets the very
config the daemon holds. Refusals must be ValueErrors that say why, nothing else.
"""

import json
import math
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import get_args

import tomlkit
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hexzd.config import RENAMED, Config, default_toml, fixed_changes, is_live, parse, sections, stored
from hexzd.daemon import messages as m
from hexzd.daemon.reconfigure import ConfigFile
from hexzd.daemon.rundir import RunDir
from hexzd.daemon.workers import worker_config
from hexzd.evaluation.sprt import Sprt
from hexzd.train.tuner import Tuner


def _literals(annotation) -> list[str]:
    """The strings a Literal annotation (or a union holding one) allows."""
    return [a for a in get_args(annotation) if isinstance(a, str)] + [
        s for part in get_args(annotation) for s in (_literals(part) if get_args(part) else [])
    ]


MODELS = dict(sections())
KEYS = [(section, key) for section, model in sections() for key in model.model_fields]
FIXED = [(s, k) for s, k in KEYS if not is_live(MODELS[s].model_fields[k])]
STRINGS = [
    *sorted({a for s, k in KEYS for a in _literals(MODELS[s].model_fields[k].annotation)}),
    "",
    "32",
    "1e3",
    "nan",
    "~/ladder.sqlite",
    "mohex --quiet",
]


def _near(section: str, key: str) -> list:
    """Values at and around a key's bounds, and its default: where validation decides."""
    info = MODELS[section].model_fields[key]
    values = [info.default]
    for metadata in info.metadata:
        for name in ("ge", "gt", "le", "lt", "low", "high"):
            bound = getattr(metadata, name, None)
            if isinstance(bound, int | float) and not isinstance(bound, bool):
                values += [bound, bound - 1, bound + 1, bound * 2, bound + 1e-9, bound - 1e-9]
    return values


SCALARS = st.one_of(
    st.booleans(),
    st.integers(-3, 3),
    st.integers(0, 300_000),
    st.integers(-(2**80), 2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e6, 1e6),
    st.floats(0, 1),
    st.sampled_from(STRINGS),
    st.text(max_size=6),
)
ENGINES = st.dictionaries(
    st.sampled_from(["mohex", "six", "a b", "perfect", "x1"]), st.sampled_from(["mohex", "six --q", "", "a 'b", 3])
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=4), ENGINES)


def _typed(section: str, key: str):
    """Values of the key's own type, of every size."""
    info = MODELS[section].model_fields[key]
    default, words = info.default, _literals(info.annotation)
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int) or default == "auto":
        ints = st.one_of(st.integers(-2, 100), st.integers(0, 2**17), st.integers(-(2**70), 2**70))
        return st.one_of(ints, st.just("auto")) if default == "auto" else ints
    if isinstance(default, float):
        return st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1), st.floats(-2000, 2000))
    if isinstance(default, list):
        return st.lists(st.integers(-1, 120_000), max_size=4)
    if isinstance(default, dict):
        return ENGINES
    return st.one_of(st.sampled_from(words), st.text(max_size=6)) if words else st.text(max_size=12)


@st.composite
def single(draw) -> list[tuple[tuple[str, str], object]]:
    """One key (of any section, or an old or unknown name) with a value of its type, or of any."""
    key = draw(st.one_of(st.sampled_from(KEYS), st.sampled_from(list(RENAMED)), st.just(("selfplay", "simz"))))
    if key not in KEYS:
        return [(key, draw(VALUES))]
    near = st.sampled_from(_near(*key))
    return [(key, draw(st.one_of(near, near, _typed(*key), VALUES)))]


def pair(a, b, values):
    return st.tuples(values, values).map(lambda v: [(a, v[0]), (b, v[1])])


DEVICE_WORDS = [w for key in ("backend", "precision") for w in _literals(MODELS["device"].model_fields[key].annotation)]
COMBINATIONS = st.one_of(
    pair(("tune", "sims_min"), ("tune", "sims_max"), st.integers(-1, 120_000)),
    pair(("tune", "batch_min"), ("tune", "batch_max"), st.integers(-1, 70_000)),
    pair(("duel", "elo0"), ("duel", "elo1"), st.floats(-1100, 1100)),
    pair(("device", "backend"), ("device", "precision"), st.sampled_from(DEVICE_WORDS)),
    pair(("selfplay", "games"), ("selfplay", "batch"), st.integers(0, 70_000)),  # an old name and its new
    pair(("train", "window"), ("train", "min_positions"), st.sampled_from(["auto", 0, 1, 300, 10_000_000, 10_000_001])),
    st.one_of(
        st.lists(st.integers(1, 100_000), min_size=1, max_size=32, unique=True),
        st.lists(st.sampled_from([0, 1, 50, 100, 6400, 100_000, 100_001]), max_size=34),
    ).map(lambda refs: [(("ratings", "references"), refs)]),
)
EDITS = st.lists(st.one_of(single(), single(), COMBINATIONS), min_size=1, max_size=3).map(lambda parts: sum(parts, []))
BASES = st.fixed_dictionaries(  # the run's fixed keys: the state file's, which an edit must keep
    {
        ("game", "board_size"): st.integers(2, 19),
        ("game", "swap"): st.booleans(),
        ("model", "blocks"): st.sampled_from(["auto", 1, 3]),
        ("train", "seed"): st.sampled_from([0, 7, 2**32 - 1]),
    }
)


def toml(value) -> str:
    if isinstance(value, dict):
        table = tomlkit.inline_table()
        table.update(value)
        return table.as_string()
    return tomlkit.item(value).as_string()


def edited(text: str, edits) -> str:
    """config.toml's text with each (section, key) set to its value: on the key's line, or
    as a new line at the top of its section."""
    lines = text.splitlines()
    for (section, key), value in edits:
        header = lines.index(next(t for t in lines if t.startswith(f"[{section}]")))
        end = next((i for i in range(header + 1, len(lines)) if lines[i].startswith("[")), len(lines))
        at = next((i for i in range(header + 1, end) if lines[i].split("=")[0].strip() == key), None)
        if at is None:
            lines.insert(header + 1, f"{key} = {toml(value)}")
        else:
            lines[at] = f"{key} = {toml(value)}"
    return "\n".join(lines) + "\n"


def accepted(text: str, running: Config) -> Config | None:
    """What the daemon makes of an edit (ConfigFile._apply): the new config, or None if refused."""
    try:
        config = parse(text)
    except ValueError as e:
        assert str(e), "a refusal says why"
        return None
    return None if fixed_changes(running, config, text) else config


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=BASES, edits=EDITS, data=st.data())
def test_every_edit_the_daemon_accepts_a_worker_takes_as_the_same_config(base, edits, data):
    start = edited(default_toml(), list(base.items()))
    running = parse(start)  # the config the daemon runs on
    text = edited(start, edits)
    config = accepted(text, running)
    event("refused" if config is None else "accepted")
    if config is None:
        return
    tuner = Tuner(running.tune, running.selfplay.sims, running.selfplay.batch)
    tuner.configure(config.tune, config.selfplay.sims, config.selfplay.batch)
    if config.tune.enabled and data.draw(st.booleans()):  # where the tuner may have moved since
        tuner.sims = data.draw(st.integers(config.tune.sims_min, config.tune.sims_max))
        tuner.batch = data.draw(st.integers(config.tune.batch_min, config.tune.batch_max))
    daemon = SimpleNamespace(config=config, tuner=tuner, config_path=Path("config.toml"))
    in_force = ConfigFile(daemon).in_force()
    assert (in_force.selfplay.sims, in_force.selfplay.batch) == (tuner.sims, tuner.batch)
    dumped = in_force.model_dump()
    with tempfile.TemporaryDirectory() as folder:  # a (re)starting worker reads config.json
        run = RunDir(Path(folder))
        run.write_config(dumped)
        assert worker_config(run.read_config()) == in_force
    update = m.decode(m.encode(m.ConfigUpdate(config=dumped)))  # a running worker gets the update
    assert worker_config(update.config) == in_force
    duel = in_force.duel
    Sprt(duel.elo0, duel.elo1, duel.alpha, duel.beta)  # what every duel builds first
    assert all(math.isfinite(v) for v in _numbers(dumped))
    # The state file keeps the config the run was made with; a restart reads it back.
    assert fixed_changes(stored(config.model_dump_json()), config, text) is None
    assert json.loads(json.dumps(dumped)) == dumped


def _numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value
