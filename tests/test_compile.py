"""``compile: auto | on | off``: resolution, refusals, and a compiled run that resumes to the
same weights as an uninterrupted compiled run and stays close to the eager run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from test_checkpoint_resume import tiny_config, write_synthetic

from semiseg3d import compiled
from semiseg3d.compiled import missing_backend, resolve_compile
from semiseg3d.config.run import config_from_mapping
from semiseg3d.errors import InputError
from semiseg3d.training.checkpoint import FINAL_NAME
from semiseg3d.training.trainer import train

#: the project's own check found a C++ compiler for inductor
HAS_CXX = not missing_backend(torch.device("cpu"))


def test_off_and_auto_on_a_cpu_stay_eager() -> None:
    assert resolve_compile(False, "cpu").enabled is False
    assert resolve_compile("off", "cpu").enabled is False
    auto = resolve_compile("auto", "cpu")
    assert auto.enabled is False
    assert "CPU" in auto.note


@pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler: inductor cannot run on this CPU")
def test_on_compiles_on_a_cpu_with_a_compiler() -> None:
    choice = resolve_compile(True, "cpu")
    assert choice.enabled and choice.setting == "on"


def test_on_without_a_cpu_compiler_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(compiled.shutil, "which", lambda name: None)
    with pytest.raises(InputError) as err:
        resolve_compile("on", "cpu")
    message = str(err.value)
    assert "'compile'" in message and "C++ compiler" in message and "\n" not in message


def test_cuda_without_triton_auto_stays_eager_and_on_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = compiled.importlib.util.find_spec
    monkeypatch.setattr(
        compiled.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "triton" else real(name, *a),
    )
    auto = resolve_compile("auto", torch.device("cuda"))
    assert auto.enabled is False and "Triton" in auto.note
    with pytest.raises(InputError, match="Triton"):
        resolve_compile(True, torch.device("cuda"))


def test_cuda_with_triton_auto_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled.importlib.util, "find_spec", lambda name, *a: object())
    assert resolve_compile("auto", torch.device("cuda")).enabled is True


@pytest.mark.parametrize(("text", "expected"), [("on", True), ("off", False), ("auto", "auto")])
def test_config_reads_yaml_on_off(text: str, expected: object, tmp_path: Path) -> None:
    mapping = yaml.safe_load(f"compile: {text}\n")  # YAML 1.1: on/off are booleans
    assert config_from_mapping(mapping, "x.yaml").compile == expected
    quoted = config_from_mapping({"compile": text}, "x.yaml").compile
    assert quoted == expected


def test_config_refuses_other_values() -> None:
    with pytest.raises(InputError, match="'compile'"):
        config_from_mapping({"compile": "fast"}, "x.yaml")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("synth"))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    final = torch.load(run / FINAL_NAME, map_location="cpu", weights_only=True)
    return {f"{net}/{k}": v for net, sd in final["models"].items() for k, v in sd.items()}


@pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler: inductor cannot run on this CPU")
def test_compiled_run_resumes_to_the_uninterrupted_weights_and_stays_close_to_eager(
    data: Path, tmp_path: Path
) -> None:
    cfg = tiny_config(data, method="suponly", amp="none", compile=True)
    whole = train(cfg, tmp_path / "whole", progress=False)
    assert whole.finished
    log = (tmp_path / "whole" / "train.log").read_text()
    assert "compile on (config 'on')" in log
    assert "s compiling of the" in log  # the compile time is reported
    runtime = yaml.safe_load((tmp_path / "whole" / "config.yaml").read_text())["runtime"]
    assert runtime["compile"] is True

    part = train(cfg, tmp_path / "resumed", stop_after=2, progress=False)
    assert not part.finished and part.iteration == 2
    rest = train(cfg, tmp_path / "resumed", progress=False)
    assert rest.finished and rest.resumed_from == 2
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    # The same run eager: the first iteration (same weights, same batch) gives the same
    # loss up to float32 rounding. Later iterations are not compared: at a 16^3 patch the
    # BatchNorm of the 1x1x1 bottleneck normalises two values, and the gradients through it
    # amplify the different summation order of fused kernels (docs/training.md).
    eager = train(
        tiny_config(data, method="suponly", amp="none"), tmp_path / "eager", progress=False
    )
    assert eager.finished
    for name in ("sup_ce_b", "sup_dice_b", "loss"):
        first_c, first_e = whole.history[0][name], eager.history[0][name]
        assert abs(first_c - first_e) <= 1e-4 * abs(first_e), (name, first_c, first_e)
    e = _weights(tmp_path / "eager")
    # not vacuous: compiled kernels really ran (their sums in another order)
    assert any(not torch.equal(a[k], e[k]) for k in a if e[k].is_floating_point()), (
        "compiled and eager weights are bit-identical: was anything compiled?"
    )


@pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler: inductor cannot run on this CPU")
def test_an_eager_checkpoint_resumes_compiled(data: Path, tmp_path: Path) -> None:
    """``compile`` may change between a run and its resumption (a GPU run continued on
    a machine without Triton, or the other way round)."""
    eager = tiny_config(data, method="suponly", amp="none")
    train(eager, tmp_path / "run", stop_after=2, progress=False)
    rest = train(
        tiny_config(data, method="suponly", amp="none", compile=True),
        tmp_path / "run",
        progress=False,
    )
    assert rest.finished and rest.resumed_from == 2
