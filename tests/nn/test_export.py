"""`hexzd export`: the files run without hexzd and give its network's outputs.

A small network, trained a few steps so that its batch norms hold statistics
of their own, is stored as the daemon stores a snapshot (store.Writer), in a
run with the swap rule, and exported through the CLI. Legal positions come
from OpenSpiel's Hex (swap on) and are encoded by hexzd's own encoder. The
ONNX file runs in onnxruntime and the .pt2 in plain torch, in a process where
hexzd cannot be imported, and both must give the network's logits and values
(hexzd's eager fp32 evaluator) within 1e-5. The docs' example runs as the
page prints it, with neither hexzd nor torch importable, and must play the
move hexzd's network prefers.
"""

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from states import snapshot_made

from hexzd import store
from hexzd.cli import main
from hexzd.config import Config, DeviceConfig
from hexzd.game.notation import cell_name, parse_cell
from hexzd.game.rules import Games
from hexzd.native.board import canonical_indices
from hexzd.nn.loader import load
from hexzd.nn.net import NetSpec, count_flops, count_params
from hexzd.nn.snapshot import Snapshot
from hexzd.store.writes import Writer

pytestmark = pytest.mark.e2e  # a network trained and exported through the CLI (about 10 s)

pyspiel = pytest.importorskip("pyspiel")

ROOT = Path(__file__).resolve().parents[2]
N = 5
SPEC = NetSpec(N, blocks=2, channels=16)
EXACT = 1e-5  # fp32 in, fp32 out: only the order of the sums may differ

# Runs a script (argv[2:]) with the top-level packages of argv[1] unimportable, as on a machine without them.
WITHOUT = """
import runpy, sys

class Unimportable:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")

BLOCKED = set(sys.argv[1].split(","))
sys.meta_path.insert(0, Unimportable())
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# Both files, run by their own runtimes: planes.npy in, outputs.npz and the metadata out.
RUN_FILES = """
import json, sys
import numpy as np
import onnxruntime
import torch

planes_path, onnx_path, pt2_path, out = sys.argv[1:]
planes = np.load(planes_path)
session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
extra = {"metadata.json": ""}
module = torch.export.load(pt2_path, extra_files=extra).module()
results = {}
for batch, x in (("all", planes), ("one", planes[:1])):
    results[f"onnx_{batch}"] = session.run(["policy_logits", "value"], {"planes": x})
    with torch.no_grad():
        results[f"pt2_{batch}"] = [t.numpy() for t in module(torch.from_numpy(x))]
np.savez(out, **{f"{k}_{i}": v for k, pair in results.items() for i, v in enumerate(pair)})
print(json.dumps({
    "onnx": dict(session.get_modelmeta().custom_metadata_map),
    "pt2": json.loads(extra["metadata.json"]),
    "hexzd_modules": [m for m in sys.modules if m.partition(".")[0] == "hexzd"],
}))
"""


def spiel_games(count: int, swap: bool, seed: int) -> list[list[int]]:
    """Action lists of unfinished games of OpenSpiel's Hex, of every length, random moves."""
    game = pyspiel.load_game("hex", {"board_size": N, "swap": swap})
    rng = np.random.default_rng(seed)
    games: list[list[int]] = []
    while len(games) < count:
        state, actions = game.new_initial_state(), []
        for _ in range(len(games) % 13):  # 0, 1, 2, ... 12 plies: at ply 1 the swap is available
            if state.is_terminal():
                break
            actions.append(int(rng.choice(state.legal_actions())))
            state.apply_action(actions[-1])
        if not state.is_terminal():
            games.append(actions)
    return games


def replayed(games: list[list[int]], swap: bool) -> Games:
    """hexzd's Games after each action list (the rules engine that encodes them)."""
    ours = Games.new(len(games), N, swap)
    for ply in range(max(map(len, games))):
        ours.play([g[ply] if ply < len(g) else -1 for g in games])
    return ours


def trained(planes: np.ndarray) -> torch.nn.Module:
    """The test's network after a few SGD steps towards random targets: its batch norms' running
    statistics are no longer the identity that a fresh network's are."""
    torch.manual_seed(0)
    model = SPEC.build().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.from_numpy(planes)
    policy = torch.softmax(torch.randn(len(x), N * N), 1)
    value = torch.rand(len(x)) * 2 - 1
    for _ in range(8):
        logits, values = model(x)
        loss = -(torch.log_softmax(logits, 1) * policy).sum(1).mean() + ((values - value) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def stored(db: Path, models: list[torch.nn.Module], config: Config) -> list[int]:
    """The models stored as the daemon stores the trainer's snapshots, the first promoted; their ids."""

    async def write() -> list[int]:
        writer = Writer(await store.writer(db))
        counters = {"selfplay_flops": 0, "accel_seconds": 0, "cpu_seconds": 0, "positions": 0}
        try:
            await writer.begin()
            await writer.set_made_with(config.model_dump_json())
            ids = []
            for model in models:
                blob = Snapshot(model.spec, model.state_dict(), count_params(model), count_flops(model)).to_bytes()
                ids.append(await writer.add_snapshot(time.time(), snapshot_made(blob, blob), counters, 0.0))
            await writer.promote(time.time(), ids[0], None, 0.6)
            await writer.commit()
            return ids
        finally:
            await writer.close()

    return asyncio.run(write())


def export(*args: str):
    return CliRunner().invoke(main, ["export", *args])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run with the swap rule whose best model (1) is the trained network and model 2 a fresh
    one, exported with `hexzd export --db ... --out DIR` (the best by default)."""
    where = tmp_path_factory.mktemp("export")
    config = Config.model_validate({"game": {"board_size": N, "swap": True}})
    positions = replayed(spiel_games(96, swap=True, seed=1), swap=True)
    ids = stored(where / "run.sqlite", [trained(positions.features()), SPEC.build().eval()], config)
    result = export("--db", str(where / "run.sqlite"), "--out", str(where / "out"))
    assert result.exit_code == 0, result.output
    stem = where / "out" / f"hexzd-{N}x{N}-model-{ids[0]}"
    network = load(where / "run.sqlite", ids[0], DeviceConfig(backend="eager"))
    return SimpleNamespace(
        where=where,
        ids=ids,
        onnx=stem.with_suffix(".onnx"),
        pt2=stem.with_suffix(".pt2"),
        output=result.output,
        network=network,
    )


def without(packages: str, *argv, cwd) -> subprocess.CompletedProcess:
    """A Python process in which `packages` cannot be imported, running the script argv[0]."""
    command = [sys.executable, "-I", "-c", WITHOUT, packages, *map(str, argv)]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def test_both_files_give_the_networks_outputs_on_legal_positions_without_hexzd(run, tmp_path):
    positions = replayed(spiel_games(64, swap=True, seed=2), swap=True)
    assert positions.ply.min() == 0 and (positions.ply == 1).sum() >= 2  # the swap plane is on in some
    np.save(tmp_path / "planes.npy", positions.features())
    (tmp_path / "run_files.py").write_text(RUN_FILES)
    done = without("hexzd", "run_files.py", "planes.npy", run.onnx, run.pt2, "outputs.npz", cwd=tmp_path)
    report = json.loads(done.stdout)
    assert report["hexzd_modules"] == []
    logits, values = run.network.evaluate(positions.codes())
    outputs = np.load(tmp_path / "outputs.npz")
    for name in ("onnx_all", "pt2_all", "onnx_one", "pt2_one"):
        rows = len(outputs[f"{name}_0"])
        assert outputs[f"{name}_0"].shape == (rows, N * N) and outputs[f"{name}_1"].shape == (rows,)
        assert np.abs(outputs[f"{name}_0"] - logits[:rows]).max() <= EXACT, name
        assert np.abs(outputs[f"{name}_1"] - values[:rows]).max() <= EXACT, name
    assert report["onnx"] == report["pt2"]


def test_the_metadata_says_what_the_network_takes_and_gives(run):
    model = onnx.load(run.onnx)  # onnx's own reader, not the exporter's
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["board_size"] == str(N) and meta["swap_rule"] == "on"
    assert meta["model_id"] == str(run.ids[0])  # the best, not the newest
    assert (meta["blocks"], meta["channels"]) == (str(SPEC.blocks), str(SPEC.channels))
    expected_keys = {"cells", "input", "planes", "orientation", "policy_logits", "value", "export_format"}
    assert expected_keys <= set(meta)
    extra = {"metadata.json": ""}
    torch.export.load(run.pt2, extra_files=extra)
    assert json.loads(extra["metadata.json"]) == meta

    def dims(value):
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    [planes] = model.graph.input
    logits, values = model.graph.output
    assert (planes.name, logits.name, values.name) == ("planes", "policy_logits", "value")
    assert dims(planes)[1:] == [4, N, N] and isinstance(dims(planes)[0], str)  # any batch
    assert dims(logits)[1:] == [N * N] and len(dims(values)) == 1
    assert f"{run.onnx}  " in run.output and "both files give its outputs within" in run.output


def example() -> str:
    """The example of docs/guides/export.md, as the page prints it."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs/guides/export.md").read_text(), re.S)
    [code] = [b for b in blocks if "import onnxruntime" in b]
    return code


def hexzd_move(network, cells: list[str]) -> tuple[str, float]:
    """The legal cell where hexzd's network puts the most policy, and its value, for a game without swap."""
    games = Games.new(1, N)
    for cell in cells:
        games.play([parse_cell(cell, N)])
    logits, values = network.evaluate(games.codes())
    prior = logits[0, canonical_indices(games.board, games.to_play)[0]]  # by cell, through the transpose
    prior = np.where(games.legal()[0, : N * N], prior, -np.inf)
    return cell_name(int(prior.argmax()), N), float(values[0])


def test_the_docs_example_plays_hexzds_move_with_onnxruntime_and_numpy_alone(run, tmp_path):
    (tmp_path / "play_onnx.py").write_text(example())
    games = spiel_games(24, swap=False, seed=3)
    for actions in (games[0], games[1], games[6], games[7], games[9], games[12]):  # either to move
        cells = [cell_name(a, N) for a in actions]
        done = without("hexzd,torch", "play_onnx.py", run.onnx, *cells, cwd=tmp_path)
        move, value = done.stdout.split()[0], float(done.stdout.split()[-1])
        expected, expected_value = hexzd_move(run.network, cells)
        assert move == expected, cells
        assert abs(value - expected_value) <= 5e-4 + EXACT, cells


def test_a_bad_model_or_file_is_one_line(run, tmp_path, monkeypatch):
    db = str(run.where / "run.sqlite")
    cases = {
        ("--db", db, "--model", "9"): "no model 9 in the state file",
        ("--db", db, "--model", "newest"): "--model is `best` or a model id, not 'newest'",
        ("--db", str(tmp_path / "missing.sqlite")): "no state file",
    }
    fresh = tmp_path / "fresh.sqlite"
    store.prepare(fresh)
    cases[("--db", str(fresh))] = "is promoted yet"
    (tmp_path / "text.sqlite").write_text("not a database\n" * 100)
    cases[("--db", str(tmp_path / "text.sqlite"))] = "text.sqlite: "
    for args, message in cases.items():
        result = export(*args, "--out", str(tmp_path))
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, result.output
    assert not list(tmp_path.glob("*.onnx"))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as Python marks a module that cannot be imported
    result = export("--db", db, "--out", str(tmp_path))
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        "Error: hexzd export needs onnxruntime: pip install 'hexzd[export]'"
    ]
