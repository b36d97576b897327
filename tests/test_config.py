"""Training config: validation of every kind of bad value, overrides, labeled counts."""

from __future__ import annotations

import pytest
import yaml

from semiseg3d.cli import main as cli_main
from semiseg3d.config.run import (
    TrainConfig,
    config_from_mapping,
    labeled_count,
    load_config,
    parse_overrides,
)
from semiseg3d.errors import InputError


def test_defaults_are_the_paper_la_settings():
    cfg = TrainConfig()
    assert (cfg.patch, cfg.stride) == ((112, 112, 80), (18, 18, 4))
    assert (cfg.tau, cfg.lam, cfg.T, cfg.alpha, cfg.tau_cps) == (0.6, 0.5, 0.5, 70.0, 0.6)
    assert (cfg.iterations, cfg.lr, cfg.lr_steps, cfg.weight_decay) == (
        6000,
        0.01,
        (2500, 5000),
        1e-4,
    )
    assert (cfg.batch_labeled, cfg.batch_unlabeled, cfg.seed) == (2, 2, 1337)
    assert cfg.mode == "paper" and cfg.method == "dual"
    # chosen on LA-lite-val (docs/method.md); the literal reading is threshold / none
    assert (cfg.cps_target, cfg.pl_rampup) == ("argmax", "sigmoid")


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"tau": 0.3}, "'tau'"),
        ({"alpha": 101}, "'alpha'"),
        ({"T": 0}, "'T'"),
        ({"lr": -1.0}, "'lr'"),
        ({"iterations": 0}, "'iterations'"),
        ({"mode": "fast"}, "'mode'"),
        ({"ic_distance": "l1"}, "'ic_distance'"),
        ({"pgl_proto_term_sign": 2}, "'pgl_proto_term_sign'"),
        ({"use_cr": 1}, "'use_cr'"),
        ({"patch": [112, 112, 81]}, "'patch'"),
        ({"patch": [112, 112]}, "'patch'"),
        ({"stride": [0, 1, 1]}, "'stride'"),
        ({"patch": [32, 32, 16], "stride": [16, 33, 8]}, "'stride'"),
        ({"lr_steps": [5000, 2500]}, "'lr_steps'"),
        ({"labeled": 8, "labeled_ratio": 0.1}, "'labeled'"),
        ({"no_such_key": 1}, "no_such_key"),
        ({"method": "dual", "batch_unlabeled": 0}, "'batch_unlabeled'"),
    ],
)
def test_bad_values_name_the_key(data, fragment):
    with pytest.raises(InputError) as err:
        config_from_mapping(data, "cfg.yaml")
    message = str(err.value)
    assert fragment in message and "\n" not in message


def test_file_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"tau": 0.7, "patch": [96, 96, 96]}))
    cfg = load_config(path, parse_overrides(["tau=0.8", "use_pgl=false", "stride=[16,16,16]"]))
    assert cfg.tau == 0.8 and cfg.use_pgl is False
    assert cfg.patch == (96, 96, 96) and cfg.stride == (16, 16, 16)
    # round trip through to_dict gives the same config
    assert config_from_mapping(cfg.to_dict()) == cfg


def test_bad_files(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(InputError, match="expected a mapping"):
        load_config(bad)
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_overrides(["tau"])


@pytest.mark.parametrize(
    ("data", "n_train", "expected"),
    [
        ({"labeled": 8}, 80, 8),
        ({"labeled_ratio": 0.1}, 80, 8),
        ({"labeled_ratio": 0.2}, 62, 12),  # 12.4 -> 12
        ({"labeled_ratio": 0.15}, 62, 9),  # 9.3 -> 9 (spec 4.2)
        ({"labeled_ratio": 0.25}, 62, 16),  # 15.5 -> 16, half rounds up
        ({"labeled_ratio": 0.15}, 250, 38),  # 37.5 -> 38
        ({}, 80, 80),  # nothing set: every training case is labeled
    ],
)
def test_labeled_count(data, n_train, expected):
    assert labeled_count(config_from_mapping(data), n_train) == expected


def test_labeled_count_out_of_range():
    with pytest.raises(InputError, match="labeled count 90"):
        labeled_count(config_from_mapping({"labeled": 90}), 80)


def test_cli_reports_input_errors_on_one_line(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("tau: 2.0\n")
    code = cli_main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("semiseg3d train: error:") and "'tau'" in err and "\n" not in err
    assert not (tmp_path / "run").exists()
