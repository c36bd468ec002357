"""config.toml: documented, in step with the code, and strict about bad input."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from hexzd.config import Config, default_toml, load, stored

ROOT = Path(__file__).resolve().parent.parent


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
