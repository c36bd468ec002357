"""`hexzd export`: a stored network as an ONNX file and a torch.export program (.pt2).

Both files hold the network as it runs in hexzd (HexNet.forward, eval mode,
fp32): the input planes float32[B, 4, n, n], the outputs policy logits
float32[B, n*n] and values float32[B], the batch free. Each carries
`metadata(...)`, the board size, planes, orientation and outputs in words,
so that a file alone says how to use it: ONNX in `metadata_props`, the .pt2
in its extra file `metadata.json`. docs/guides/export.md explains it all, with
an example that plays a move with onnxruntime and numpy alone.

Why .pt2 rather than TorchScript: torch 2.13 deprecates torch.jit's trace,
script, save and load, each warning "switch to torch.export". A .pt2 loads
in plain torch (`torch.export.load(path).module()`), needs no hexzd, and is
what AOTInductor and ExecuTorch start from. One ExportedProgram makes both
files: the ONNX exporter (dynamo, with onnxscript) starts from it too.

`write` checks the files it wrote before it returns: both run positions of
`sample_codes` and must match the torch module within MAX_DIFFERENCE.
"""

import importlib.util
import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hexzd import __version__
from hexzd.native.board import NUM_PLANES
from hexzd.nn.backends.base import sample_codes
from hexzd.nn.net import HexNet, planes
from hexzd.nn.snapshot import Snapshot

__all__ = ["EXTRA_FILE", "INPUT", "OUTPUTS", "Exported", "metadata", "missing_packages", "paths", "write"]

FORMAT = 1  # of the metadata: a reader checks `export_format` before trusting the keys below it
INPUT = "planes"
OUTPUTS = ("policy_logits", "value")
EXTRA_FILE = "metadata.json"  # the .pt2's metadata, inside its archive
PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # the `export` extra: write, convert, check
MAX_DIFFERENCE = 1e-5  # in a logit or a value, between a file and the torch module (fp32 both)
CHECK_POSITIONS = 64


@dataclass(frozen=True)
class Exported:
    """What `write` made: the two files and the largest difference its check found."""

    onnx: Path
    pt2: Path
    max_difference: float


def missing_packages() -> list[str]:
    """The packages of the `export` extra that this Python lacks."""
    return [name for name in PACKAGES if importlib.util.find_spec(name) is None]


def paths(out, board_size: int, model_id: int) -> tuple[Path, Path]:
    """(the .onnx, the .pt2) for `--out`: a file name ending in either suffix gives both
    their stem; anything else is a directory, the files named for the board and model."""
    out = Path(out)
    if out.suffix in (".onnx", ".pt2"):
        stem = out.with_suffix("")
    else:
        stem = out / f"hexzd-{board_size}x{board_size}-model-{model_id}"
    return stem.with_suffix(".onnx"), stem.with_suffix(".pt2")


def metadata(snapshot: Snapshot, model_id: int, swap: bool) -> dict[str, str]:
    """What a user of the file needs to know, as strings (ONNX metadata holds only strings).

    The words follow hexzd.native.board.features_one and codes_one (the
    planes and the orientation), canonical_index (the policy's cells and
    the swap move) and hexzd.nn.net (the outputs).
    """
    spec, n = snapshot.spec, snapshot.spec.board_size
    return {
        "export_format": str(FORMAT),
        "hexzd_version": __version__,
        "model_id": str(model_id),
        "train_step": str(snapshot.step),
        "board_size": str(n),
        "blocks": str(spec.blocks),
        "channels": str(spec.channels),
        "swap_rule": "on" if swap else "off",
        "cells": "cell (r, c) is row r from the top and column c from the left, 0-based; its action is"
        f" r*{n} + c, its name the column letter and row number (a1 = (0, 0), the acute corner)."
        " Black moves first and joins row 1 to the last row; White joins column a to the last column",
        "input": f"{INPUT}: float32[B, {NUM_PLANES}, {n}, {n}], NCHW, any batch B",
        "planes": "plane 0: the stones of the player to move; plane 1: the opponent's stones;"
        " plane 2: all ones (the board: the convolutions' zero padding marks its edge);"
        " plane 3: all ones when the swap move is available (swap rule on, White to move"
        " after Black's first stone), else all zeros. 1.0 for yes, 0.0 for no",
        "orientation": "canonical: the player to move joins the top row to the bottom row."
        " Black to move: planes[:, r, c] is cell (r, c). White to move: the board is transposed,"
        " planes[:, r, c] is cell (c, r)",
        "policy_logits": f"float32[B, {n * n}]: a logit per cell of the canonical board, index r*{n} + c"
        f" for planes[:, r, c]: the action r*{n} + c with Black to move, c*{n} + r with White."
        " Occupied cells get logits too: mask them before the softmax. The swap move's logit"
        " is the one at the cell of the lone stone it takes over",
        "value": "float32[B] in (-1, 1) (tanh): the expected result for the player to move, +1 a win",
    }


def write(snapshot: Snapshot, meta: dict[str, str], onnx_path: Path, pt2_path: Path) -> Exported:
    """Writes the network of `snapshot` to both files, with `meta` in each, and checks them.

    Raises RuntimeError if a file's outputs differ from the torch module's by
    more than MAX_DIFFERENCE.
    """
    model = snapshot.model()
    for path in (onnx_path, pt2_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet():
        program = _program(model)
        torch.export.save(program, pt2_path, extra_files={EXTRA_FILE: json.dumps(meta, indent=1)})
        onnx_program = torch.onnx.export(
            program,
            (),
            dynamo=True,
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_shapes=({0: "batch"},),  # names the free dimension, s84 otherwise
            verbose=False,
        )
    assert onnx_program is not None  # dynamo=True always returns the program
    onnx_program.model.metadata_props.update(meta)
    onnx_program.save(onnx_path, external_data=False)
    difference = _check(model, onnx_path, pt2_path)
    if not difference <= MAX_DIFFERENCE:
        raise RuntimeError(f"the exported files differ from the network by {difference:.2g}, over {MAX_DIFFERENCE:g}")
    return Exported(onnx_path, pt2_path, difference)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silences two notes of torch 2.13's exporters that are not about the network: a log line
    for each torchvision operator it skips (torchvision is not a dependency), and a
    FutureWarning that its own decomposition pass raises from inside torch."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def _program(model: HexNet) -> torch.export.ExportedProgram:
    """The network traced by torch.export, its batch dimension free."""
    n = model.spec.board_size
    example = torch.zeros(2, NUM_PLANES, n, n)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        return torch.export.export(model, (example,), dynamic_shapes=({0: batch},))


def _check(model: HexNet, onnx_path: Path, pt2_path: Path) -> float:
    """The largest absolute difference in a logit or a value between the torch module and either
    file, on positions of sample_codes (a batch of several, then one alone)."""
    import onnxruntime

    n = model.spec.board_size
    codes = torch.from_numpy(sample_codes(n, CHECK_POSITIONS, seed=5))
    x = planes(codes, n).contiguous()
    with torch.no_grad():
        expected = [t.numpy() for t in model(x)]
        loaded = torch.export.load(pt2_path).module()
        runs = [[t.numpy() for t in loaded(x)], [t.numpy() for t in loaded(x[:1])]]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    runs += [session.run(list(OUTPUTS), {INPUT: x.numpy()}), session.run(list(OUTPUTS), {INPUT: x[:1].numpy()})]
    return max(
        float(np.abs(got - want[: len(got)]).max()) for run in runs for got, want in zip(run, expected, strict=True)
    )
