"""`hexzd bench chaos`, its short pass: every kind of chaos once against a real daemon,
and every check of the long run (the 30-minute run is a benchmark, not a test)."""

import pytest

from hexzd.benchmarks import chaos

pytestmark = pytest.mark.e2e  # a real daemon, killed and restarted: `pytest -m e2e`


@pytest.mark.timeout(400)
def test_every_kind_of_chaos_once_loses_nothing(tmp_path):
    lines = []

    def echo(line: str) -> None:  # printed too, so that a failure shows the run's log
        lines.append(line)
        print(line)

    result = chaos.run(size=3, minutes=0, out=tmp_path, echo=echo)
    assert result["kills_worker"] == 1 and result["kills_daemon"] == 1
    assert set(result["edits_bad"]) == set(chaos._bad_edits(3))
    assert result["frames_malformed"] and result["frames_oversized"] and result["pauses"] == 1
    assert result["checks"] == dict.fromkeys(result["checks"], True), (result, lines)
