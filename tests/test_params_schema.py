"""params.yaml and its JSON schema: bad keys and values stop with a message naming them, and
the schema stays in sync with the code it describes."""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from semiseg3d.config import run as train_config
from semiseg3d.config.run import TrainConfig
from semiseg3d.errors import InputError
from semiseg3d.grid.run_config import RUN_KEYS, load_params, validate_params
from semiseg3d.io.yamlio import read_yaml


@pytest.fixture(scope="module")
def params(root: Path) -> dict[str, Any]:
    return load_params(root / "params.yaml")


@pytest.fixture(scope="module")
def schema(root: Path) -> dict[str, Any]:
    return read_yaml(root / "workflow" / "schemas" / "params.schema.yaml")


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        tree = tree[key]
    tree[last] = value


# (dotted key, bad value, text the one-line message must contain)
BAD = [
    ("train.la.alph", 3, "unknown key train.la.alph"),
    ("train.la.alpha", 300, "train.la.alpha"),
    ("train.la.tau", 0.2, "train.la.tau"),
    ("train.la.mode", "papr", "train.la.mode"),
    ("train.la.patch", [112, 112], "train.la.patch"),
    ("train.la.patch", [100, 112, 80], "multiple of 16"),
    ("train.defaults.iterations", 0, "train.defaults.iterations"),
    ("variants.no_ue.use_uee", False, "unknown key variants.no_ue.use_uee"),
    ("variants.no_ue.use_ue", "no", "variants.no_ue.use_ue"),
    ("data.la.source", "web", "data.la.source"),
    ("data.la.labeled.x10", 3, "data.la.labeled"),
    ("data.la.labeled.r10", 0, "data.la.labeled.r10"),
    ("data.pancreas.options", {"windw": [0, 1]}, "unknown key data.pancreas.options.windw"),
    ("data.pancreas.options", {"window": [240, -120]}, "data.pancreas: option 'window'"),
    ("grid.seeds", ["a"], "grid.seeds.0"),
    ("grid.ratios", [10], "unknown key grid.ratios"),
    ("grid.experiments", [{"name": "x", "ratios": [10], "variants": ["nope"]}], "'nope'"),
    ("grid.experiments", [{"name": "x", "ratios": [0], "variants": ["full"]}], "ratios.0"),
    ("grid.datasets", ["liver"], "dataset 'liver' is not defined under data"),
    ("report.qualitative_cases", 0, "report.qualitative_cases"),
    ("reports", {}, "unknown key reports"),
]


@pytest.mark.parametrize(("key", "value", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_key_or_value_names_it(
    params: dict[str, Any], key: str, value: Any, message: str
) -> None:
    bad = copy.deepcopy(params)
    _set(bad, key, value)
    with pytest.raises(InputError) as info:
        validate_params(bad, source="params.yaml")
    text = str(info.value)
    assert message in text
    assert text.startswith("params.yaml")
    assert "\n" not in text


def test_missing_section(params: dict[str, Any]) -> None:
    bad = copy.deepcopy(params)
    del bad["grid"]
    with pytest.raises(InputError, match="'grid' is a required property"):
        validate_params(bad)


def test_defaults_are_valid(params: dict[str, Any]) -> None:
    validate_params(params)


def test_train_keys_match_trainconfig(schema: dict[str, Any]) -> None:
    """Every TrainConfig field but the per-run ones is settable in params.yaml, and nothing else."""
    settable = set(schema["$defs"]["train_settings"]["properties"])
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert settable == fields - RUN_KEYS
    assert RUN_KEYS <= fields


def test_train_enums_match_trainconfig(schema: dict[str, Any]) -> None:
    props = schema["$defs"]["train_settings"]["properties"]
    for name, choices in train_config._CHOICES.items():
        assert set(props[name]["enum"]) == set(choices), name


def test_method_enum_is_the_method_registry(schema: dict[str, Any]) -> None:
    """The schema's ``method`` enum lists exactly the registered methods, and the config
    accepts exactly those (``method`` has no choice list of its own)."""
    from semiseg3d.config.registry import METHODS

    enum = schema["$defs"]["train_settings"]["properties"]["method"]["enum"]
    assert sorted(enum) == sorted(METHODS) and len(enum) == len(set(enum))
    assert "method" not in train_config._CHOICES
    for name in METHODS:
        assert TrainConfig(method=name, batch_labeled=2, batch_unlabeled=2).method == name
    with pytest.raises(InputError, match="config key 'method' must be one of"):
        TrainConfig(method="not_registered")


def test_convert_options_match_converter(schema: dict[str, Any]) -> None:
    from semiseg3d.data.preprocess import PreprocessOptions

    options = schema["$defs"]["dataset_source"]["properties"]["options"]["properties"]
    assert set(options) == {f.name for f in dataclasses.fields(PreprocessOptions)}


def test_convert_formats_match_converter(schema: dict[str, Any]) -> None:
    from semiseg3d.data.convert import ALIASES, DATASETS

    formats = set(schema["$defs"]["dataset_source"]["properties"]["format"]["enum"])
    assert formats == set(DATASETS) | set(ALIASES)


def _snakemake() -> list[str]:
    exe = Path(sys.executable).with_name("snakemake")
    if not exe.exists():
        found = shutil.which("snakemake")
        if not found:
            pytest.skip("snakemake is not installed")
        exe = Path(found)
    return [str(exe)]


def test_snakemake_stops_on_bad_params(root: Path, tmp_path: Path) -> None:
    """The DAG is not built: `snakemake -n` exits non-zero with the one-line message."""
    for name in ("Snakefile", "params.yaml"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "workflow", tmp_path / "workflow")
    overlay = tmp_path / "bad.yaml"
    overlay.write_text(yaml.safe_dump({"train": {"la": {"lam": -1}}}), encoding="utf-8")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        [*_snakemake(), "-n", "--configfile", "bad.yaml"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "params.yaml, bad.yaml: train.la.lam: -1 is less than the minimum of 0" in out


def test_snakemake_config_option_is_named_not_params(root: Path, tmp_path: Path) -> None:
    """`snakemake --config K=V` is refused with one line naming --config, not params.yaml."""
    for name in ("Snakefile", "params.yaml"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "workflow", tmp_path / "workflow")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        [*_snakemake(), "-n", "--config", "grid=1.0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "--config grid: settings cannot be changed with --config" in out
    assert "params.yaml: grid" not in out and "np.float64" not in out
