"""State a method keeps beside its networks survives a resume: SASSNet's discriminator and
its Adam state, SS-Net's prototype memory (``Method.state_dict``, saved in checkpoint.pt).

A run stopped after iteration 3 (last checkpoint at 2) and resumed ends with the same
weights, optimizer states and method state as the uninterrupted run, tensor for tensor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_checkpoint_resume import _tensors, tiny_config, write_synthetic

from semiseg3d.methods.base import Method
from semiseg3d.training.checkpoint import load_checkpoint
from semiseg3d.training.trainer import train


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("synth_state"))


def test_method_state_defaults_are_empty() -> None:
    method = Method.__new__(Method)
    assert method.state_dict() == {}
    method.load_state_dict({})  # a no-op


@pytest.mark.parametrize(
    ("method", "state_keys"),
    [("sassnet", {"discriminator", "optimizer", "last_d_loss"}), ("ssnet", {"memory"})],
)
def test_stopped_and_resumed_run_keeps_the_method_state(
    data: Path, tmp_path: Path, method: str, state_keys: set[str]
) -> None:
    cfg = tiny_config(data, method=method, keep_checkpoint=True, amp="none")
    straight = train(cfg, tmp_path / "straight", progress=False)
    assert straight.finished
    train(cfg, tmp_path / "resumed", stop_after=3, progress=False)
    mid = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert mid["iteration"] == 2 and set(mid["method_state"]) == state_keys
    second = train(cfg, tmp_path / "resumed", progress=False)
    assert second.resumed_from == 2 and second.finished
    assert second.history == straight.history[2:]  # the same logged values after the resume

    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    unequal = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not unequal, f"tensors differ after resume: {unequal[:5]}"
    state = _tensors(a["method_state"])
    assert state, "the method state holds tensors"
    if method == "sassnet":
        # D was stepped by its own Adam: its weights moved from the initial ones
        assert int(a["method_state"]["optimizer"]["state"][0]["step"]) == 4
    else:
        memory = a["method_state"]["memory"]
        assert memory[0].shape[0] == 0 and 1 < memory[1].shape[0] <= 32  # foreground only
