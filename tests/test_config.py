"""config.toml: documented, in step with the code, and strict about bad input."""

import json
import re
from pathlib import Path

import pytest
from daemon_run import config_text
from pydantic import ValidationError

from hexzd.config import Config, default_toml, fixed_changes, load, notices, parse, stored

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"


def test_config_toml_is_the_documented_default():
    assert (ROOT / "config.toml").read_text() == default_toml()
    assert load(ROOT / "config.toml") == Config()


def test_every_key_has_a_comment_saying_live_or_fixed():
    for line in (ROOT / "config.toml").read_text().splitlines():
        if "=" in line.split("#", 1)[0]:
            comment = line.split("#", 1)[1].strip()
            assert comment.startswith(("live: ", "fixed: ")), line


@pytest.mark.parametrize(
    "edit,where",
    [
        ("sims = 32", "config.toml:9: selfplay.sims"),
        ("c_puct = 1.5", "config.toml:10: selfplay.c_puct"),
    ],
)
def test_bad_values_name_the_key_and_line(tmp_path, edit, where):
    key, _ = edit.split(" = ")
    bad = {"sims": "sims = -3", "c_puct": 'c_puct = "high"'}[key]
    path = tmp_path / "config.toml"
    path.write_text(default_toml().replace(edit, bad, 1))
    with pytest.raises(ValueError, match=where):
        load(path)


def test_unknown_keys_and_bad_toml_are_refused(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(default_toml().replace("[game]", "[game]\nboard_sise = 7", 1))
    with pytest.raises(ValueError, match="game.board_sise"):
        load(path)
    path.write_text("[game\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load(path)


def test_a_state_files_config_from_an_older_layout_still_reads():
    """meta.config of a run made before the inference keys moved from [model] to [device]."""
    old = Config().model_dump()
    old["game"]["board_size"], old["model"]["blocks"] = 7, 2
    old["model"].update(backend="cpu", precision="fp32", threads=2)  # where they used to live
    del old["device"]["threads"]
    old["search"] = {"sims": 64}  # a section that no longer exists
    text = json.dumps(old)
    with pytest.raises(ValidationError):
        Config.model_validate_json(text)
    config = stored(text)
    assert (config.game.board_size, config.model.blocks) == (7, 2)
    assert config.device == Config().device


@pytest.mark.parametrize(
    "n,blocks,channels,window",
    [(3, 4, 32, 100_000), (5, 4, 32, 100_000), (7, 4, 32, 100_000), (9, 4, 48, 162_000), (19, 9, 96, 722_000)],
)
def test_auto_sizes_follow_the_board_and_are_what_the_run_records(n, blocks, channels, window):
    config = parse(f"[game]\nboard_size = {n}\n")
    assert (config.model.blocks, config.model.channels, config.train.window) == (blocks, channels, window)
    assert stored(config.model_dump_json()) == config  # the state file keeps the sizes, not "auto"


def test_sizes_set_by_hand_win_and_bad_ones_name_the_key_and_line():
    config = parse('[game]\nboard_size = 9\n[model]\nblocks = 2\nchannels = "auto"\n[train]\nwindow = 5000\n')
    assert (config.model.blocks, config.model.channels, config.train.window) == (2, 48, 5000)
    for text, where in [
        ('[model]\nblocks = "big"\n', 'config.toml:2: model.blocks: .*an integer or "auto"'),
        ("[model]\n\nchannels = 2\n", "config.toml:3: model.channels: .*from 4 to 1024"),
        ("[train]\nwindow = true\n", "config.toml:2: train.window"),
    ]:
        with pytest.raises(ValueError, match=where):
            parse(text)


def test_a_run_made_with_another_shape_is_told_which_value_to_set():
    made = parse("[game]\nboard_size = 9\n[model]\nchannels = 32\n")  # a run from before channels followed the board
    text = "[game]\nboard_size = 9\n"
    message = fixed_changes(made, parse(text), text)
    assert message and "model.channels: fixed for this run at 32, not 48: set it to 32" in message
    assert fixed_changes(made, made, text) is None


def test_a_config_toml_of_an_earlier_hexzd_reads_its_renamed_keys_with_a_notice():
    """tests/data/config-2026-12-04.toml is main's config.toml before selfplay.games became
    selfplay.batch and duel.cpu_share evaluation.cpu_share: every value still reads."""
    text = (DATA / "config-2026-12-04.toml").read_text().replace("games = 32 ", "games = 24 ", 1)
    text = text.replace("cpu_share = 0.2 ", "cpu_share = 0.3 ", 1)
    config = parse(text)
    assert (config.selfplay.batch, config.evaluation.cpu_share) == (24, 0.3)
    lines = text.splitlines()
    said = notices(text)
    assert len(said) == 2
    for notice, old, new in zip(said, ("selfplay.games", "duel.cpu_share"), ("selfplay.batch", "evaluation.cpu_share")):
        number = int(notice.split(":")[1])
        assert lines[number - 1].split("=")[0].strip() == old.split(".")[1]
        assert f"{old} is now {new}" in notice
    assert notices(default_toml()) == []


def test_a_key_set_under_its_old_and_new_names_is_refused_at_the_old_one():
    text = default_toml().replace("batch = 32 ", "batch = 32\ngames = 16 ", 1)
    line = text.splitlines().index(next(t for t in text.splitlines() if t.startswith("games = 16"))) + 1
    with pytest.raises(ValueError, match=rf"config.toml:{line}: selfplay.games: now selfplay.batch, which this file"):
        parse(text)


def test_a_state_files_config_with_the_old_names_keeps_their_values():
    old = Config().model_dump()
    old["selfplay"]["games"] = old["selfplay"].pop("batch") + 5
    old["duel"]["cpu_share"] = old.pop("evaluation")["cpu_share"] / 2
    config = stored(json.dumps(old))
    assert (config.selfplay.batch, config.evaluation.cpu_share) == (37, 0.1)


# -- edits that crash-loop the workers are refused; every problem is told at once --------

AT_MOST, AT_LEAST = "Input should be less than or equal to", "Input should be greater than or equal to"
CRASH_LOOPS = [
    # (the edit, in its section, and what the refusal names) Each was accepted once, and
    # then every worker that used it failed at its start, for ever.
    ("[duel]", "elo0 = 0.0", "duel.elo0: should be below elo1 (0.0), not 0.0"),  # Sprt raises
    ("[duel]", "elo1 = -200.0", "duel.elo0: should be below elo1 (-200.0), not -100.0"),
    ("[duel]", "elo1 = 1e9", f"duel.elo1: {AT_MOST} 1000"),
    ("[tune]", "sims_max = 200_000", f"tune.sims_max: {AT_MOST} 100000"),
    ("[tune]", "batch_max = 100_000", f"tune.batch_max: {AT_MOST} 65536"),
    ("[tune]", "sims_min = 900", "tune.sims_min: should be at most sims_max (800), not 900"),
    ("[tune]", "batch_min = 2048", "tune.batch_min: should be at most batch_max (1024), not 2048"),
    ("[train]", "batch_size = 1_000_000_000", f"train.batch_size: {AT_MOST} 65536"),
    ("[train]", "window = 1_000_000_000", "train.window: Value error, should be from 1 to 10000000"),
    ("[duel]", "max_pairs = 1_000_000_000", f"duel.max_pairs: {AT_MOST} 100000"),
    ("[ratings]", "references = [100, 10_000_000]", f"ratings.references.1: {AT_MOST} 100000"),
    (
        "[ratings]",
        "references = [100, 200, 100]",
        "ratings.references: Value error, each reference once, not 100 again",
    ),
    ("[daemon]", "progress_seconds = 1e-9", f"daemon.progress_seconds: {AT_LEAST} 0.1"),
    ("[train]", "poll_seconds = 1e-9", f"train.poll_seconds: {AT_LEAST} 0.1"),
    ("[selfplay]", "c_puct = inf", "selfplay.c_puct: Input should be a finite number"),
    ("[duel]", "elo0 = nan", "duel.elo0: Input should be a finite number"),
    (
        "[device]",
        'backend = "cpu"\nprecision = "int8"',
        "device.precision: the cpu backend runs fp32 (or auto), not int8",
    ),
    ("[train]", "seed = -1", f"train.seed: {AT_LEAST} 0"),
    (
        "[cluster]",
        'address = "head node"',
        """cluster.address: Value error, should be empty, "auto", "ray://host:port" or "host:port", not 'head node'""",
    ),
]


def line_in(text: str, section: str, key: str) -> int:
    """The line of `key = ...` within `section` of a config file's text."""
    lines = text.splitlines()
    start = next(i for i, t in enumerate(lines) if t.startswith(section))
    return next(i for i, t in enumerate(lines, 1) if i > start and t.startswith(f"{key} ="))


@pytest.mark.parametrize("section,edit,named", CRASH_LOOPS, ids=[e.replace("\n", ", ") for _, e, _ in CRASH_LOOPS])
def test_edits_that_would_crash_loop_the_workers_are_refused_naming_key_and_line(section, edit, named):
    text = config_text({section: edit.splitlines()})
    key = named.split(":")[0].split(".")[1]
    with pytest.raises(ValueError) as refused:
        parse(text)
    assert str(refused.value) == f"config.toml:{line_in(text, section, key)}: {named}"


def test_every_problem_is_told_at_once_each_on_its_line_with_its_key():
    text = config_text(
        {
            "[selfplay]": ["sims = -5"],
            "[duel]": ["elo0 = 10.0"],
            "[tune]": ["sims_max = 200_000"],
            "[train]": ["window = 0"],
            "[daemon]": ["progress_seconds = 0"],
        }
    )
    with pytest.raises(ValueError) as refused:
        parse(text)
    told = str(refused.value).splitlines()
    assert told == [
        f"config.toml:{line_in(text, '[selfplay]', 'sims')}: selfplay.sims: {AT_LEAST} 1",
        f"config.toml:{line_in(text, '[train]', 'window')}: train.window: Value error, should be from 1 to 10000000",
        f"config.toml:{line_in(text, '[duel]', 'elo0')}: duel.elo0: should be below elo1 (0.0), not 10.0",
        f"config.toml:{line_in(text, '[tune]', 'sims_max')}: tune.sims_max: {AT_MOST} 100000",
        f"config.toml:{line_in(text, '[daemon]', 'progress_seconds')}: daemon.progress_seconds: {AT_LEAST} 0.1",
    ]


def test_a_file_that_is_not_utf8_or_cannot_be_read_is_one_clear_line(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(default_toml().replace("[game]", "# r\xe9glages\n[game]", 1).encode("latin-1"))
    line = default_toml().splitlines().index(next(t for t in default_toml().splitlines() if t.startswith("[game]"))) + 1
    with pytest.raises(
        ValueError, match=rf"^{re.escape(str(path))}:{line}: not UTF-8 \(byte 0xe9\): save the file as UTF-8$"
    ):
        load(path)
    path.unlink()
    path.mkdir()
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: cannot be read: Is a directory$"):
        load(path)


def test_a_state_files_config_from_before_the_bounds_keeps_its_fixed_keys():
    """Bounds and cross-field rules came later: a state file's live keys that break them take
    their defaults (a state file keeps to its fixed keys); its fixed keys are kept."""
    old = Config().model_dump()
    old["game"]["board_size"] = 7
    old["duel"].update(elo0=0.0, elo1=0.0, max_pairs=10**9)
    old["daemon"]["progress_seconds"] = 1e-9
    old["tune"].update(sims_min=900)
    config = stored(json.dumps(old))
    assert config.game.board_size == 7
    assert (config.duel, config.daemon, config.tune) == (Config().duel, Config().daemon, Config().tune)
    old["train"]["seed"] = -1  # a fixed key out of bounds is not made up
    with pytest.raises(ValidationError, match="train.seed"):
        stored(json.dumps(old))
