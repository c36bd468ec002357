"""A run's curves as TensorBoard event files, copied from its state file.

The state file stays the source of truth: the event files in a folder are a
copy for `tensorboard --logdir FOLDER`, written by one Exporter for both the
daemon's live export (`[logging] tensorboard`, hexzd.daemon.tensorboard_live)
and `hexzd report --tensorboard` (one export() call).

Neither a crash nor a restart loses or repeats a point, because an Exporter
never resumes files that an earlier one wrote:
- its first export() deletes this run's event files in the folder (those
  whose names end in `.hexzd-RUN`, RUN the state file's `run` id, so runs
  that share a folder keep theirs) and writes every row the state file has
  into a new one; each later call appends the rows added since. The daemon,
  the file's one writer, adds a table's rows in commit order, so rows with
  rowids above the last one read are exactly the rows not yet written.
- an Exporter whose export() raised is never used again: a new one starts
  the folder anew. A crash mid-write leaves at worst a subset of the
  points, which the next start replaces.
- the ratings are refitted as games come in, every promoted snapshot's at
  once. They go to a file of their own (`.hexzd-RUN.ratings`), written anew
  after each fit, and then the previous one is deleted.
TensorBoard's data server, already showing points of a deleted file, takes
the new ones over them: a point preempts the points of its tag at its step
and later (its reservoir's "preemption"), so nothing shows twice.

Tags, each with a description in the file, and their steps:
- `SOURCE/NAME` for each metric (`trainer/policy_loss`, `trainer/lr`,
  `daemon/games_per_s`, `daemon/gpu_util`, ...), and `cpu_share/WORKER` for
  each worker's share of the CPU. A sample that the trainer reported with
  its step (`train_step` at the same moment) has that step. Any other
  sample's step is its whole seconds since the run's start.
- `tuner/KNOB` (`tuner/sims`, `tuner/batch`): each decision's new value, at
  seconds since the start.
- `promotion/model` (the promoted model's id) and `promotion/score` (its duel
  score), at the model's training step, wall time the promotion.
- `rating/elo`, `rating/elo_lo95`, `rating/elo_hi95`: each promoted,
  rated snapshot's Elo (rollouts @100 = 0) and the ends of its 95% interval,
  in the latest fit, at the snapshot's training step, wall time its making.
Wall times are the rows' own times. Values are float32: TensorBoard's data
server reads no other scalar tensors (a double's tag is not listed at all).
"""

from pathlib import Path
from types import SimpleNamespace

from hexzd.store import consistent_read, reads

INSTALL = "pip install 'hexzd[tensorboard]'"
CHUNK = 10_000  # metric samples read and written at a time
STEPS = {
    "train": "step: the trainer's step",
    "seconds": "step: whole seconds since the run's start",
    "model": "step: the model's training step",
}
RATINGS = {
    "rating/elo": "Elo of each promoted snapshot in the latest fit (rollouts @100 = 0)",
    "rating/elo_lo95": "lower end of each promoted snapshot's 95% rating interval, in Elo",
    "rating/elo_hi95": "upper end of each promoted snapshot's 95% rating interval, in Elo",
}
PROMOTIONS = {
    "promotion/model": "the id of each promoted model, at its promotion",
    "promotion/score": "the promoted model's score in the duel that promoted it",
}

Point = tuple[str, float, int, float]  # (tag, wall time, step, value)


class ExportError(RuntimeError):
    """Event files that cannot be written, in one line: tensorboard missing, or an Exporter that failed."""


def tensorboard() -> SimpleNamespace:
    """The parts of the tensorboard package the Exporter uses, or an ExportError saying how to install it."""
    try:
        from tensorboard.compat.proto import event_pb2, tensor_pb2, types_pb2
        from tensorboard.plugins.scalar import metadata
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError:
        raise ExportError(f"TensorBoard event files need the tensorboard package, not installed: {INSTALL}") from None
    return SimpleNamespace(
        Event=event_pb2.Event,
        TensorProto=tensor_pb2.TensorProto,
        DT_FLOAT=types_pb2.DT_FLOAT,
        scalar_metadata=metadata.create_summary_metadata,
        EventFileWriter=EventFileWriter,
    )


def metric_tag(source: str, name: str) -> str:
    """A metric's tag: the CPU shares of all workers side by side, the rest under their source."""
    return f"{name}/{source}" if name == "cpu_share" else f"{source}/{name}"


class EventFile:
    """One event file being written: scalars in, grouped into one event per moment and step."""

    def __init__(self, tb: SimpleNamespace, folder: Path, suffix: str):
        self.tb = tb
        self.writer = tb.EventFileWriter(str(folder), filename_suffix=suffix)
        self.described: set[str] = set()  # TensorBoard reads a tag's description from its first value

    def write(self, points: list[Point], descriptions: dict[str, str]) -> None:
        event = None
        for tag, wall_time, step, value in points:
            if event is None or (event.wall_time, event.step) != (wall_time, step):
                if event is not None:
                    self.writer.add_event(event)
                event = self.tb.Event(wall_time=wall_time, step=step)
            tensor = self.tb.TensorProto(dtype=self.tb.DT_FLOAT, float_val=[value])
            entry = event.summary.value.add(tag=tag, tensor=tensor)
            if tag not in self.described:
                self.described.add(tag)
                entry.metadata.CopyFrom(self.tb.scalar_metadata(display_name=tag, description=descriptions[tag]))
        if event is not None:
            self.writer.add_event(event)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Exporter:
    """Copies one state file's curves into event files in `folder` (see the module's doc).

    Raises ExportError at once without the tensorboard package."""

    def __init__(self, db, folder):
        self.db, self.folder = Path(db), Path(folder)
        self.tb = tensorboard()
        self.file: EventFile | None = None  # the series' file, from the first export() on
        self.run = ""  # the state file's id, which ends the names of its event files
        self.start = 0.0  # the run's start: the origin of steps in seconds
        self.after = {"metrics": 0, "tuning": 0, "promotions": 0}  # the last rowid written of each table
        self.fitted: float | None = None  # the time of the ratings fit written last
        self.failed = False

    def export(self) -> int:
        """Writes the rows added since the last call, every row on the first; returns the points written.

        Raises StateFileError (the state file), OSError (the folder), or ExportError."""
        if self.failed:
            raise ExportError("an export failed before: start a new Exporter, which writes the folder anew")
        try:
            with consistent_read(self.db) as c:  # every table as of one moment, though the daemon writes on
                if self.file is None and not self._begin(c):
                    return 0
                written = self._metrics(c) + self._series(c)
                written += self._ratings(c)
        except BaseException:
            self.failed = True
            raise
        return written

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    def _begin(self, c) -> bool:
        """Deletes this run's event files in the folder and opens a new one; False while the
        state file has no row to date the run's start by."""
        start = reads.run_span(c)["start"]
        if start is None:
            return False
        self.start, self.run = start, reads.run_id(c) or "unnamed"
        self.folder.mkdir(parents=True, exist_ok=True)
        for path in self._own_files("") + self._own_files(".ratings"):
            path.unlink(missing_ok=True)
        self.file = EventFile(self.tb, self.folder, f".hexzd-{self.run}")
        return True

    def _own_files(self, kind: str) -> list[Path]:
        return sorted(self.folder.glob(f"events.out.tfevents.*.hexzd-{self.run}{kind}"))

    def _seconds(self, at: float) -> int:
        return max(0, int(at - self.start))

    def _metrics(self, c) -> int:
        """The metric samples since the last call, a chunk at a time."""
        assert self.file is not None
        written = 0
        while rows := reads.metric_samples_after(c, self.after["metrics"], CHUNK):
            points, descriptions = [], {}
            for _, at, source, name, value, train_step in rows:
                tag = metric_tag(source, name)
                kind = "seconds" if train_step is None else "train"
                step = self._seconds(at) if train_step is None else int(train_step)
                points.append((tag, at, step, value))
                descriptions[tag] = f"`{name}` from `{source}` (the metrics table); {STEPS[kind]}"
            self.file.write(points, descriptions)
            self.after["metrics"] = rows[-1][0]
            written += len(points)
        self.file.flush()
        return written

    def _series(self, c) -> int:
        """The tuner's decisions and the promotions since the last call."""
        assert self.file is not None
        tuning = reads.tuning_after(c, self.after["tuning"])
        points: list[Point] = [(f"tuner/{knob}", at, self._seconds(at), new) for _, at, knob, new in tuning]
        descriptions = {
            f"tuner/{knob}": f"the tuner's {knob} at each decision; {STEPS['seconds']}" for *_, knob, _ in tuning
        }
        promotions = reads.promotions_after(c, self.after["promotions"])
        for model_id, at, score, train_step in promotions:
            points.append(("promotion/model", at, train_step, float(model_id)))
            if score is not None:
                points.append(("promotion/score", at, train_step, score))
        descriptions |= {tag: f"{what}; {STEPS['model']}" for tag, what in PROMOTIONS.items()}
        self.file.write(points, descriptions)
        self.file.flush()
        if tuning:
            self.after["tuning"] = tuning[-1][0]
        if promotions:
            self.after["promotions"] = promotions[-1][0]
        return len(points)

    def _ratings(self, c) -> int:
        """After a new fit, the promoted snapshots' ratings in a new file, and the last one deleted."""
        fitted = reads.ratings_fitted_at(c)
        if fitted is None or fitted == self.fitted:
            return 0
        rated = reads.promoted_ratings(c)
        points: list[Point] = [
            (tag, r["created_at"], r["train_step"], r[column])
            for r in rated
            for tag, column in zip(RATINGS, ("rating", "rating_lo", "rating_hi"))
        ]
        older = self._own_files(".ratings")
        if points:
            file = EventFile(self.tb, self.folder, f".hexzd-{self.run}.ratings")
            file.write(points, {tag: f"{what}; {STEPS['model']}" for tag, what in RATINGS.items()})
            file.close()
        for path in older:
            path.unlink(missing_ok=True)
        self.fitted = fitted
        return len(points)
