"""BCP's batch geometry (issue 18): under 2 + 2 no training forward of the student or the
teacher receives a batch of one (BatchNorm in train mode would normalise one crop by its
own statistics)."""

from __future__ import annotations

from pathlib import Path

import pytest

from semiseg3d.config.run import TrainConfig
from semiseg3d.methods.bcp import BCP


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from semiseg3d.data.synthetic import SynthParams, write_dataset

    root = tmp_path_factory.mktemp("synth")
    write_dataset(root, SynthParams(n_train=6, n_test=1, shape=(32, 32, 16), seed=0))
    return root


def test_no_bcp_training_forward_sees_a_batch_of_one(
    synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from semiseg3d.training.trainer import train

    seen: list[tuple[str, str, int]] = []  # (network, stage, batch) of every network call
    stage = {"now": ""}
    attach, loss = BCP.attach, BCP.loss

    def attach_with_hooks(self, nets, teachers):  # type: ignore[no-untyped-def]
        for name, net in [*nets.items(), *teachers.items()]:
            net.register_forward_pre_hook(
                lambda _m, args, name=name: seen.append((name, stage["now"], args[0].shape[0]))
            )
        attach(self, nets, teachers)

    def loss_with_stage(self, ctx, t, image, label_l):  # type: ignore[no-untyped-def]
        stage["now"] = "pre" if t < self.pretrain else "self"
        assert image.shape[0] == 4 and label_l.shape[0] == 2  # 2 labeled + 2 unlabeled
        return loss(self, ctx, t, image, label_l)

    monkeypatch.setattr(BCP, "attach", attach_with_hooks)
    monkeypatch.setattr(BCP, "loss", loss_with_stage)
    cfg = TrainConfig(
        data_dir=str(synth),
        dataset="synthetic",
        method="bcp",
        labeled=2,
        batch_labeled=2,
        batch_unlabeled=2,
        patch=(16, 16, 16),
        stride=(16, 16, 16),
        bcp_pretrain_steps=2,
        iterations=2,
        lr_steps=(),
        checkpoint_every=100,
        num_workers=0,
        device="cpu",
        amp="none",
        seed=5,
    )
    result = train(cfg, tmp_path / "bcp", progress=False)
    assert result.finished
    # pre-training: one student forward per step; self-training: teacher once, student once
    assert [(n, s) for n, s, _ in seen] == [("vnet", "pre")] * 2 + [
        ("teacher", "self"),
        ("vnet", "self"),
    ] * 2
    assert all(b == 2 for _, _, b in seen), seen
