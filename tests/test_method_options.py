"""``method_options``: one config key for every method's own settings, checked against the
options the method's registry entry declares; the module's Settings dataclass has the same
fields and defaults; the README lists every option."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from semiseg3d.config.registry import METHODS, method_options
from semiseg3d.config.run import TrainConfig, load_config
from semiseg3d.errors import InputError
from semiseg3d.paths import repo_root

#: method -> (module, Settings class) of the methods that declare options
SETTINGS = {
    "sassnet": ("semiseg3d.methods.sassnet", "SASSNetSettings"),
    "urpc": ("semiseg3d.methods.urpc", "URPCSettings"),
    "ssnet": ("semiseg3d.methods.ssnet", "SSNetSettings"),
    "cpcl": ("semiseg3d.methods.cpcl", "CPCLSettings"),
    "acmt": ("semiseg3d.methods.acmt", "ACMTSettings"),
    "mlrpl": ("semiseg3d.methods.mlrpl", "MLRPLSettings"),
}


def test_every_declared_option_is_a_settings_field_with_its_default() -> None:
    declaring = {name for name, entry in METHODS.items() if entry.options}
    assert declaring == set(SETTINGS) | {"luseg"}
    for method, (module, cls_name) in SETTINGS.items():
        cls = getattr(importlib.import_module(module), cls_name)
        fields = {f.name: f.default for f in dataclasses.fields(cls)}
        declared = {opt.name: opt.default for opt in METHODS[method].options}
        assert fields == declared, method
        # and the run's settings are what the config says
        assert cls.from_config(TrainConfig(method=method)) == cls()


def test_values_are_checked_with_one_line_naming_the_key() -> None:
    assert method_options("acmt", {}) == {
        "variant": "ent",
        "mu_net": "student",
        "perr_entropy": "code",
    }
    for method, given, match in (
        ("uamt", {"variant": "mu"}, "'method_options.variant': method 'uamt' has no such option"),
        ("acmt", {"varaint": "mu"}, "'method_options.varaint': method 'acmt' has no such option"),
        ("ssnet", {"bg_memory": 1}, "'method_options.bg_memory' must be true or false"),
        ("sassnet", {"w_adv": "high"}, "'method_options.w_adv' must be a number >= 0 or null"),
        ("mlrpl", {"decoders": 2.0}, "'method_options.decoders' must be one of \\[2, 3\\]"),
    ):
        with pytest.raises(InputError, match=match) as err:
            TrainConfig(method=method, method_options=given)
        assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="--set method_options must be a mapping"):
        load_config(None, {"method": "acmt", "method_options": ["mu"]})


def test_set_one_option_on_the_command_line() -> None:
    cfg = load_config(None, {"method": "acmt", "method_options.variant": "mu"})
    assert cfg.method_options == {"variant": "mu"}
    with pytest.raises(InputError, match="--set method_options.variant: .*must be one of"):
        load_config(None, {"method": "acmt", "method_options.variant": "x"})


def test_readme_lists_every_option() -> None:
    text = (repo_root() / "README.md").read_text(encoding="utf-8")
    for method, entry in METHODS.items():
        for opt in entry.options:
            assert f"| `{method}` | `{opt.name}` |" in text, (method, opt.name)
