"""Adding a method = one module + one registry entry (docs/architecture.md).

A toy method is written as one module in a temporary package (outside ``semiseg3d``) and
registered with one entry; nothing else of the package is touched. It then goes through
everything a method goes through: config validation (its batch rule), ``semiseg3d
run-config`` (with the schema's enum extended, as its data would be), two training steps,
``semiseg3d test``, ``semiseg3d complexity`` and the report's Tables 1-3.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml

from semiseg3d.cli import main as cli_main
from semiseg3d.config import registry
from semiseg3d.config.registry import BatchRule, MethodSpec, ReportRow
from semiseg3d.config.run import TrainConfig, load_config
from semiseg3d.errors import InputError
from semiseg3d.paths import repo_root

TOY_MODULE = '''
"""A toy method: a narrow V-Net, cross-entropy on the labeled samples only."""

from __future__ import annotations

from torch import Tensor, nn

from semiseg3d.losses.supervised import ce_loss
from semiseg3d.methods.base import Method, StepContext
from semiseg3d.models import VNet


def toy_loss(logits: Tensor, label: Tensor) -> Tensor:
    """Cross-entropy of (B_l, 2, X, Y, Z) logits against (B_l, X, Y, Z) labels."""
    return ce_loss(logits, label)


class ToyMethod(Method):
    """One V-Net of width 4 named ``net``."""

    def build(self) -> tuple[nn.Module, dict[str, nn.Module]]:
        model = VNet(n_filters=4)
        return model, {"net": model}

    def loss(self, ctx: StepContext, t: int, image: Tensor, label_l: Tensor):
        logits = ctx.forward(self.nets["net"], image)[0]
        loss = toy_loss(logits[: label_l.shape[0]], label_l)
        return loss, {"toy_ce": loss.detach(), "loss": loss.detach()}
'''

#: the one registry entry: a batch rule of its own, one Tables 1-3 row
TOY_ENTRY = MethodSpec(
    "toypkg.toy_method:ToyMethod",
    "Toy",
    (ReportRow("toy", "Toy method", "toy"),),
    BatchRule(min_unlabeled=1, equal=True, why="toy pairs"),
)


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The toy module in a temporary package, and its registry entry."""
    package = tmp_path / "pkgroot" / "toypkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "toy_method.py").write_text(TOY_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setitem(registry.METHODS, "toy", TOY_ENTRY)
    yield tmp_path
    for name in [m for m in sys.modules if m == "toypkg" or m.startswith("toypkg.")]:
        del sys.modules[name]


def _schema_with_toy(tmp_path: Path) -> Path:
    """The repository's schema with ``toy`` in the method enum (the method's data)."""
    schema = yaml.safe_load(
        (repo_root() / "workflow" / "schemas" / "params.schema.yaml").read_text(encoding="utf-8")
    )
    schema["$defs"]["train_settings"]["properties"]["method"]["enum"].append("toy")
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(schema), encoding="utf-8")
    return path


def _params(tmp_path: Path) -> Path:
    params = {
        "data": {"synthetic": {"source": "synth", "synth": {"cases": 6, "test": 2}}},
        "train": {
            "defaults": {
                "iterations": 2,
                "lr_steps": [],
                "patch": [16, 16, 16],
                "stride": [16, 16, 16],
                "num_workers": 0,
                "device": "cpu",
                "amp": "none",
                "checkpoint_every": 1,
            }
        },
        "variants": {"toy": {"method": "toy"}},
        "grid": {
            "seeds": [1],
            "datasets": ["synthetic"],
            "experiments": [{"name": "toy", "ratios": [50], "variants": ["toy"]}],
        },
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


def test_config_validation_reads_the_new_entry(toy: Path) -> None:
    assert TrainConfig(method="toy", batch_labeled=2, batch_unlabeled=2).method == "toy"
    with pytest.raises(InputError, match=r"method 'toy' needs batch_labeled = batch_unlabeled"):
        TrainConfig(method="toy", batch_labeled=2, batch_unlabeled=1)
    with pytest.raises(InputError, match="'toy'"):  # the choices list it
        TrainConfig(method="no_such_method")


def test_a_toy_method_goes_through_the_whole_pipeline(
    toy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp = toy
    data, split = tmp / "data" / "processed" / "synthetic", tmp / "data" / "splits" / "s"
    argv = ["synth", "--out", str(data), "--cases", "6", "--test", "2", "--shape", "32", "32", "16"]
    assert cli_main(argv) == 0
    assert cli_main(["split", "--data", str(data), "--labeled", "3", "--out", str(split)]) == 0
    lists = [(split / f"{n}.list").read_text(encoding="utf-8") for n in ("labeled", "unlabeled")]
    (split / "train.list").write_text("".join(lists), encoding="utf-8")  # as the data rule does
    cfg_file = tmp / "toy.yaml"
    argv = ["run-config", "--params", str(_params(tmp)), "--schema", str(_schema_with_toy(tmp))]
    argv += ["--dataset", "synthetic", "--ratio", "50", "--variant", "toy", "--seed", "1"]
    argv += ["--data-dir", str(data), "--split", str(split), "--out", str(cfg_file)]
    assert cli_main(argv) == 0
    assert load_config(cfg_file).method == "toy"

    run = tmp / "results" / "runs" / "synthetic" / "toy" / "r50" / "s1"
    assert cli_main(["train", "--config", str(cfg_file), "--out", str(run)]) == 0
    final = torch.load(run / "model_final.pt", weights_only=True)
    assert final["iteration"] == 2 and set(final["models"]) == {"net"}
    log = (run / "train.log").read_text(encoding="utf-8")
    assert "iter 2/2" in log and "toy_ce=" in log  # its own terms were logged

    assert cli_main(["test", "--run", str(run)]) == 0
    assert (run / "metrics.csv").is_file() and (run / "predictions").is_dir()
    assert (run / "metrics_lcc.csv").is_file()  # a baseline entry: the other LCC variant too

    capsys.readouterr()
    assert cli_main(["complexity", "--model", "toy", "--patch", "16", "16", "16"]) == 0
    counts = json.loads(capsys.readouterr().out)
    # its own builder: the parameters are the trained weights less BatchNorm's buffers
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    trained = sum(v.numel() for k, v in final["models"]["net"].items() if not k.endswith(buffers))
    assert counts["model"] == "toy" and counts["params"] == trained

    from semiseg3d.reporting.collect import collect
    from semiseg3d.reporting.complexity import complexity_report
    from semiseg3d.reporting.context import ReportContext
    from semiseg3d.reporting.tables import main_table

    params = yaml.safe_load((tmp / "params.yaml").read_text(encoding="utf-8"))
    ctx = ReportContext(collect(tmp / "results" / "runs"), {}, params, complexity_report)
    table = main_table(ctx, "synthetic")
    assert table is not None
    row = table.numeric[table.numeric["variant"] == "toy"]
    assert list(row["method"]) == ["Toy method"] and int(row["params"].iloc[0]) == trained
    assert row["dice_mean"].notna().all()
