"""What every method computes is unchanged since main a3e8dfd (issue 17).

Each method's short float32 run on the synthetic data (:mod:`behaviour`: a few iterations,
``num_workers: 0``, through ``semiseg3d train`` and ``semiseg3d test``) must end with the
same weights and metrics as recorded on main at a3e8dfd, before the redesign moved any code
(or, for a method whose numbers a later fix changed on purpose, as re-recorded after that
fix: :data:`CHANGES`):
each final tensor's sum and norm and every metric at relative 1e-4. The expected values are
not the code under test's: they were written by the code as it was
(``tests/data/behaviour_a3e8dfd.json``, with the machine and torch version). The SHA-256
of every tensor and CSV is compared by hand (``python tests/behaviour.py check FILE``) on
the recording machine, where the runs are bit-identical.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from behaviour import RUNS, compare, make_data, run_one

FIXTURE = Path(__file__).parent / "data" / "behaviour_a3e8dfd.json"
#: deliberate changes since a3e8dfd, each re-recorded for the methods it changed (a later
#: file overrides an earlier one): issue 18 gave MC-Net, MC-Net+ and BCP their originals'
#: PyTorch-default initialisation and BCP forwards on two crops (docs/baselines.md), then
#: UA-MT and DTC theirs (``Method.reinit``)
CHANGES = (
    Path(__file__).parent / "data" / "behaviour_init_fix.json",
    Path(__file__).parent / "data" / "behaviour_reinit.json",
)


@pytest.fixture(scope="module")
def recorded() -> dict:
    base = json.loads(FIXTURE.read_text(encoding="utf-8"))
    for path in CHANGES:
        later = json.loads(path.read_text(encoding="utf-8"))
        assert later["base"] == base["base"], f"{path.name}: recorded with other settings"
        base["runs"].update(later["runs"])
        base["runs_config"].update(later["runs_config"])
    return base


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_data(tmp_path_factory.mktemp("behaviour"))


@pytest.mark.parametrize("name", list(RUNS))
def test_run_computes_what_main_a3e8dfd_computed(
    name: str, data: Path, recorded: dict, tmp_path: Path
) -> None:
    assert recorded["runs_config"][name] == RUNS[name]  # the same run as recorded
    got = run_one(name, data, tmp_path)
    want = recorded["runs"][name]
    assert len(got["tensors"]) == len(want["tensors"]) > 0
    assert "metrics.csv" in got["metrics"]
    diffs = compare(got, want, rel=1e-4)
    assert not diffs, "\n".join(diffs[:20])
