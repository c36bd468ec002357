"""device.gpus: which GPUs self-play spreads over, as each worker process will see them."""

import pytest

from hexzd.config import Config
from hexzd.daemon.supervisor import Supervisor, chosen_gpus


def test_all_means_every_visible_gpu_and_indices_pick_among_them(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,GPU-8f2a,5")
    assert chosen_gpus("all") == ["3", "GPU-8f2a", "5"]
    assert chosen_gpus([2, 0]) == ["5", "3"]
    with pytest.raises(ValueError, match="names GPU 3, but 3 are visible"):
        chosen_gpus([0, 3])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert chosen_gpus("all") == []  # CUDA sees none: self-play runs on the CPU


def test_each_gpu_gets_its_self_play_workers_and_the_trainer_and_duels_take_the_ends(tmp_path):
    config = Config.model_validate({"selfplay": {"workers": 2}})
    supervisor = Supervisor(tmp_path / "run.sqlite", None, lambda: config, None)
    supervisor.gpus = ["0", "1", "2"]
    workers = {w.name: w.gpu for w in supervisor.wanted()}
    selfplay = [gpu for name, gpu in workers.items() if name.startswith("selfplay-")]
    assert sorted(selfplay) == ["0", "0", "1", "1", "2", "2"]
    assert (workers["trainer"], workers["duel"]) == ("0", "2")
    supervisor.gpus = []  # no GPU: two self-play processes that see what the daemon sees
    assert [w.gpu for w in supervisor.wanted()] == [None] * 4
