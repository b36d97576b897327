"""Read a trained run another way: ``semiseg3d test`` or ``semiseg3d predict`` with
``--set KEY=VALUE``, ``KEY`` one of the keys its method declares inference-only
(:attr:`semiseg3d.methods.base.Method.inference_keys`: MC-Net(+)'s ``mcnet_infer``, URPC's
``method_options.infer``). Such a key chooses how the trained weights are turned into a
prediction (which head or decoder), never how they were trained, so the same
``model_final.pt`` can be scored both ways without retraining. Any other key is refused: a
finished run's training settings are a record.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from semiseg3d.config.run import OPTION_PREFIX, TrainConfig, config_from_mapping, lay_overrides
from semiseg3d.errors import InputError

__all__ = ["apply_inference_overrides", "override_tag"]


def apply_inference_overrides(cfg: TrainConfig, overrides: Mapping[str, Any]) -> TrainConfig:
    """``cfg`` with the inference-only keys of ``overrides`` changed, validated as a config.

    Args:
        cfg: a finished run's config.
        overrides: ``{key: value}`` from ``--set`` (values parsed as YAML).

    Returns:
        The changed config (``cfg`` itself when ``overrides`` is empty).

    Raises:
        InputError: a key the run's method does not declare inference-only (one line naming
            ``--set KEY`` and the keys it may change), or a value the key does not allow.
    """
    if not overrides:
        return cfg
    from semiseg3d.methods import method_class

    allowed = method_class(cfg.method).inference_keys
    for key in overrides:
        if key not in allowed:
            may = ", ".join(allowed) if allowed else "none"
            raise InputError(
                f"--set {key}: not an inference setting of method '{cfg.method}'; a trained "
                f"run can be read differently only through {may}"
            )
    data = cfg.to_dict()
    sources = lay_overrides(data, overrides)
    return config_from_mapping(data, "run config", sources)


def override_tag(overrides: Mapping[str, Any]) -> str:
    """A file-name part for the outputs of an override: ``infer-mean`` for
    ``method_options.infer=mean``, ``mcnet_infer-mean`` for ``mcnet_infer=mean``; parts
    joined by ``_`` in the given order ("" without overrides)."""
    parts = []
    for key, value in overrides.items():
        name = key.removeprefix(OPTION_PREFIX)
        text = str(value).lower() if isinstance(value, bool) else str(value)
        parts.append(re.sub(r"[^A-Za-z0-9_.-]", "-", f"{name}-{text}"))
    return "_".join(parts)
