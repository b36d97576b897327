"""What a training run checks before it writes anything: its data and lists
(:func:`check_inputs`, from the files' headers) and its run folder's config
(:func:`check_run_config`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from semiseg3d.config.run import TrainConfig, config_from_mapping, labeled_count
from semiseg3d.data.dataset import VolumeDataset, cache_fits
from semiseg3d.data.volumes import case_path, check_volume_headers, read_list
from semiseg3d.errors import InputError
from semiseg3d.io.atomic import remove_stale_temps, write_text_atomic
from semiseg3d.io.yamlio import read_yaml
from semiseg3d.methods import get_method
from semiseg3d.training.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    FINAL_NAME,
    config_differences,
    load_checkpoint,
)

__all__ = [
    "TrainInputs",
    "resolve_lists",
    "check_inputs",
    "check_run_config",
    "remove_stale_run_temps",
    "checked_dataset",
]


def resolve_lists(cfg: TrainConfig) -> tuple[Path, Path, Path]:
    """The dataset folder and the train / test list files of a config.

    An empty ``train_list`` / ``test_list`` means ``<data_dir>/train.list`` /
    ``<data_dir>/test.list``.

    Raises:
        InputError: ``data_dir`` is empty or not a folder.
    """
    if not cfg.data_dir:
        raise InputError("config key 'data_dir' is empty: set the dataset folder")
    data = Path(cfg.data_dir)
    if not data.is_dir():
        raise InputError(f"{data}: dataset folder (config key 'data_dir') not found")
    train_list = Path(cfg.train_list) if cfg.train_list else data / "train.list"
    test_list = Path(cfg.test_list) if cfg.test_list else data / "test.list"
    return data, train_list, test_list


@dataclass(frozen=True)
class TrainInputs:
    """The checked data of a run (:func:`check_inputs`).

    Attributes:
        data: dataset folder.
        train_list: the training list file.
        ids: the cases the run reads (labeled first; ``suponly``: the labeled ones only).
        n_labeled: labeled cases (the first ``n_labeled`` of ``ids``).
        n_unlabeled: unlabeled cases (the rest of ``ids``).
        batch_unlabeled: unlabeled patches per batch (0 for ``suponly``).
    """

    data: Path
    train_list: Path
    ids: list[str]
    n_labeled: int
    n_unlabeled: int
    batch_unlabeled: int


def check_inputs(cfg: TrainConfig) -> TrainInputs:
    """Check the data and lists of a run from the files' headers, writing nothing.

    Raises:
        InputError: a missing folder, list or case; too few labeled cases for a batch;
            no unlabeled case for ``dual``; a volume smaller than the patch after
            downsampling (what ``semiseg3d check-data --min-shape PATCH --downsample D``
            refuses); a labeled case without a ``label``.
    """
    data, train_list, _ = resolve_lists(cfg)
    train_ids = read_list(train_list)
    n_l = labeled_count(cfg, len(train_ids))
    if n_l < cfg.batch_labeled:
        raise InputError(
            f"config: {n_l} labeled case(s) cannot fill a batch of batch_labeled = {cfg.batch_labeled}"
        )
    if get_method(cfg).uses_unlabeled:
        if n_l == len(train_ids):
            raise InputError(
                f"{train_list}: all {n_l} training cases are labeled; method "
                f"'{cfg.method}' needs unlabeled cases (lower 'labeled' / 'labeled_ratio', "
                "or use method 'suponly')"
            )
        ids, n_u, bu = train_ids, len(train_ids) - n_l, cfg.batch_unlabeled
    else:
        ids, n_u, bu = train_ids[:n_l], 0, 0
    try:
        check_volume_headers(
            data,
            ids,
            ids[:n_l],
            min_shape=cfg.patch,
            downsample=cfg.downsample,
            why=f"first {n_l} of {train_list}",
        )
    except InputError as exc:
        if "smaller than the minimum" not in str(exc):
            raise
        raise InputError(
            f"{exc} (config key 'patch' = {list(cfg.patch)}: choose a patch no larger than "
            "every training volume, see docs/own-data.md)"
        ) from exc
    return TrainInputs(data, train_list, list(ids), n_l, n_u, bu)


def remove_stale_run_temps(out_dir: Path) -> list[Path]:
    """Remove what a killed session left in a run folder: unfinished atomic writes of
    ``checkpoint.pt``, ``model_final.pt``, ``config.yaml`` (``.<name>.*.tmp*``)."""
    removed: list[Path] = []
    for name in (CHECKPOINT_NAME, FINAL_NAME, CONFIG_NAME):
        removed += remove_stale_temps(out_dir / name)
    return removed


def check_run_config(cfg: TrainConfig, out_dir: Path, *, write: bool = True) -> None:
    """Write ``DIR/config.yaml``, or check that the one there (and the checkpoint's) match.

    Args:
        cfg: the run's config.
        out_dir: the run folder.
        write: write the config (False: only compare with what the folder holds).

    Raises:
        InputError: naming the differing keys, when the folder belongs to another config.
    """
    new = cfg.to_dict()
    cfg_path = out_dir / CONFIG_NAME
    if cfg_path.is_file():
        old = read_yaml(cfg_path, "run config", expect="a mapping of config keys")
        diff = config_differences(config_from_mapping(old, str(cfg_path)).to_dict(), new)
        if diff:
            raise InputError(
                f"{cfg_path}: the run folder holds a run with a different config "
                f"(keys {diff}); use another --out folder or delete this one"
            )
    ckpt = out_dir / CHECKPOINT_NAME
    if ckpt.is_file():
        stored = load_checkpoint(ckpt)["config"]
        # a key added to the config after the checkpoint was written has its default there
        defaults = TrainConfig().to_dict()
        stored = {**{k: v for k, v in defaults.items() if k not in stored}, **stored}
        diff = config_differences(stored, new)
        if diff:
            raise InputError(
                f"{ckpt}: checkpoint was written with a different config (keys {diff}); "
                "use another --out folder or delete this one"
            )
    if write:
        write_text_atomic(cfg_path, yaml.safe_dump(new, sort_keys=False))


def checked_dataset(cfg: TrainConfig, inputs: TrainInputs) -> VolumeDataset:
    """The training cases as a dataset, every volume read and validated now
    (:meth:`~semiseg3d.data.dataset.VolumeDataset.check_all`): cached ones are kept in
    memory, the others are read once more by the loader. So a data error (NaN voxels, a
    label value 2) stops the command before the run folder is created or written to."""
    paths = [case_path(inputs.data, c) for c in inputs.ids]
    cache = cfg.cache_volumes
    if cache == "auto":
        cache = cache_fits(paths, cfg.downsample)
    dataset = VolumeDataset(
        inputs.data,
        inputs.ids,
        cfg.patch,
        downsample=cfg.downsample,
        with_label=not get_method(cfg).uses_unlabeled,
        cache=bool(cache),
        augment=cfg.augment,
    )
    dataset.check_all()
    return dataset
