"""``semiseg3d doctor``: check an installation and a workspace in one go.

One line per check, ``ok`` or ``FAIL`` first; exit code 0 only when every check passes.
Run it in the checkout (the folder holding ``params.yaml``):

- ``python``, ``torch``: versions against what the package requires (``pyproject.toml``).
- ``cpu``, ``cuda``: bf16 / AMX support of the CPU, CUDA devices and their bf16 support
  (information: a machine without them still passes).
- ``amp auto``: what ``amp: auto`` picks on this machine for each configured training patch
  (:func:`semiseg3d.accel.resolve_acceleration`, the same call training makes), with the
  CPU bf16 self-check's cached verdict for the dual network (``--bf16-check`` runs it).
- ``disk``: free space on the file system of ``results/`` against what the configured grid
  still needs: the final weights of every unfinished run (and its checkpoint where
  ``keep_checkpoint`` is on), plus one training job's checkpoint and the temporary copy
  written beside it. Sizes come from the networks' parameter counts (float32).
- ``write data/``, ``write results/``, ``write reports/``: a file can be created there (or in
  the folder that would hold it, when it does not exist yet).
- ``temporaries``: no temporary of a killed write (``.<name>.<random>.tmp*``, see
  :mod:`semiseg3d.io.atomic`) older than an hour under ``data/``, ``results/``, ``reports/``.
- ``shared``: whether ``$SEMISEG3D_SHARED`` or ``../shared`` is found (optional; a set
  ``SEMISEG3D_SHARED`` that does not exist fails).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semiseg3d.errors import Semiseg3dError

__all__ = [
    "Check",
    "WORKSPACE_FOLDERS",
    "STALE_AFTER_S",
    "run_checks",
    "grid_storage",
    "add_arguments",
    "main",
]

#: the pipeline's output folders, relative to the workspace
WORKSPACE_FOLDERS = ("data", "results", "reports")
#: a temporary older than this (seconds) belongs to no running command
STALE_AFTER_S = 3600.0
#: bytes of a saved file per byte of tensor data (zip and pickle framing, the config)
_FILE_OVERHEAD = 1.01


@dataclass(frozen=True)
class Check:
    """One line of the report: ``ok`` / ``FAIL``, what was checked, what was found."""

    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


def _gb(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB"


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.0f} MB"


# -- installation ------------------------------------------------------------------------------


def _requirements() -> tuple[str, str | None]:
    """``Requires-Python`` and the pinned torch version of the installed package."""
    from importlib import metadata

    try:
        meta = metadata.metadata("semiseg3d")
        requires = metadata.requires("semiseg3d") or []
    except metadata.PackageNotFoundError:
        return ">=3.11", None
    pin = next(
        (r.split("==", 1)[1].split(";")[0].strip() for r in requires if re.match(r"torch\s*==", r)),
        None,
    )
    return meta.get("Requires-Python") or ">=3.11", pin


def check_python() -> Check:
    need, _ = _requirements()
    have = platform.python_version()
    m = re.search(r">=\s*(\d+)\.(\d+)", need)
    ok = m is None or sys.version_info[:2] >= (int(m.group(1)), int(m.group(2)))
    return Check("python", ok, f"{have} (the package needs {need})")


def check_torch() -> Check:
    _, pin = _requirements()
    try:
        import torch
    except ImportError as exc:
        return Check("torch", False, f"cannot import torch ({exc})")
    have = torch.__version__
    base = have.split("+", 1)[0]
    if pin is None or base == pin:
        return Check("torch", True, f"{have}" + (f" (pinned {pin})" if pin else ""))
    return Check(
        "torch",
        False,
        f"{have}, but the package pins {pin}; install torch=={pin} (README: Install on a GPU machine)",
    )


def check_cpu() -> Check:
    from semiseg3d.accel import cpu_supports_bf16
    from semiseg3d.bf16check import cpu_info

    flags = cpu_info()[1]
    found = [f for f in ("avx512_bf16", "amx_bf16", "amx_tile") if f in flags] or ["none"]
    bf16 = "yes" if cpu_supports_bf16() else "no"
    return Check(
        "cpu", True, f"{os.cpu_count()} cores, native bf16 {bf16} (flags: {', '.join(found)})"
    )


def check_cuda() -> Check:
    import torch

    if not torch.cuda.is_available():
        return Check("cuda", True, "not available (training and inference run on the CPU)")
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    bf16 = "yes" if torch.cuda.is_bf16_supported() else "no"
    return Check("cuda", True, f"{len(names)} device(s): {', '.join(names)}; bf16 {bf16}")


def check_amp(
    settings: dict[tuple[int, ...], tuple[list[str], Any]], run_bf16_check: bool = False
) -> list[Check]:
    """What ``amp: auto`` / ``channels_last: auto`` pick on this machine per training patch.

    On a CPU with native bf16 the answer also depends on the bf16 self-check of the run's
    networks at that patch (:mod:`semiseg3d.bf16check`), shown here for the paper's dual
    network: its cached verdict, or, with ``run_bf16_check``, the check itself (one float32
    and one bf16 training pass; cached for the runs that follow).

    Args:
        settings: patch -> (the datasets that train at it, one of their configs).
        run_bf16_check: run the self-check where no verdict is cached.
    """
    import dataclasses

    import torch

    from semiseg3d.accel import resolve_acceleration
    from semiseg3d.bf16check import bf16_verdict, cached_verdict
    from semiseg3d.training.runtime import training_probe

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    out = []
    for patch, (datasets, cfg) in settings.items():
        name = f"amp auto, patch {list(patch)} ({', '.join(datasets)})"
        try:
            accel = resolve_acceleration("auto", "auto", device)
        except Semiseg3dError as exc:
            out.append(Check(name, False, str(exc)))
            continue
        note = ""
        if accel.dtype == torch.bfloat16 and device.type == "cpu":
            probe = training_probe(dataclasses.replace(cfg, method="dual"))
            verdict = bf16_verdict(probe, True) if run_bf16_check else cached_verdict(probe, True)
            if verdict is None:
                note = (
                    "; bf16 self-check not run yet for this patch (the first run checks it; "
                    "'semiseg3d doctor --bf16-check' checks now)"
                )
            elif verdict.ok:
                note = "; bf16 self-check passed (dual network)"
            else:
                accel = resolve_acceleration("none", "auto", device)
                note = f"; bf16 self-check failed (dual network: {verdict.reason}), so float32"
        detail = (
            f"{accel.precision} on {device.type}, channels_last "
            f"{'on' if accel.channels_last else 'off'}" + note
        )
        out.append(Check(name, True, detail))
    return out


# -- the configured grid -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Sizes:
    """Bytes on disk of one method's files: ``model_final.pt`` and ``checkpoint.pt``."""

    final: int
    checkpoint: int


def method_sizes(cfg: Any) -> _Sizes:
    """File sizes of a run of ``cfg``'s method, from its networks' parameter counts.

    ``model_final.pt`` holds the trained networks' state (float32 weights and buffers);
    ``checkpoint.pt`` adds one SGD momentum buffer per weight and the EMA teachers' state.
    The networks are built on the ``meta`` device (no memory, no computation).
    """
    import torch

    from semiseg3d.methods import get_method

    method = get_method(cfg)
    with torch.device("meta"):
        _model, nets = method.build()
        teachers = method.build_teachers()

    def state_bytes(modules: dict[str, Any]) -> int:
        return sum(
            t.numel() * t.element_size() for m in modules.values() for t in m.state_dict().values()
        )

    momentum = sum(p.numel() * p.element_size() for m in nets.values() for p in m.parameters())
    final = state_bytes(nets)
    return _Sizes(
        final=int(final * _FILE_OVERHEAD),
        checkpoint=int((final + momentum + state_bytes(teachers)) * _FILE_OVERHEAD),
    )


@dataclass(frozen=True)
class GridStorage:
    """What the configured grid still needs on disk (bytes)."""

    runs: int
    unfinished: int
    final_bytes: int  #: final weights (and kept checkpoints) of the unfinished runs
    job_bytes: int  #: one training job: its checkpoint and the temporary copy beside it
    per_method: dict[str, _Sizes]

    @property
    def total(self) -> int:
        return self.final_bytes + self.job_bytes


def grid_storage(params: dict[str, Any], root: Path) -> GridStorage:
    """Disk space the grid of ``params`` still needs under ``root/results/runs``."""
    from semiseg3d.config.run import config_from_mapping
    from semiseg3d.grid import run_config as rc
    from semiseg3d.training.checkpoint import FINAL_NAME

    runs = rc.expand_grid(params)
    per_method: dict[str, _Sizes] = {}
    final_bytes = job = unfinished = 0
    for key in runs:
        cfg = config_from_mapping(rc.variant_settings(params, key.dataset, key.variant))
        if cfg.method not in per_method:
            per_method[cfg.method] = method_sizes(cfg)
        sizes = per_method[cfg.method]
        if (root / rc.run_dir(key) / FINAL_NAME).is_file():
            continue
        unfinished += 1
        final_bytes += sizes.final + (sizes.checkpoint if cfg.keep_checkpoint else 0)
        job = max(job, 2 * sizes.checkpoint)
    return GridStorage(len(runs), unfinished, final_bytes, job, per_method)


def _show(path: Path, root: Path) -> str:
    """``path`` as the report shows it: relative to the workspace when inside it."""
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_disk(storage: GridStorage, root: Path) -> Check:
    where = _existing(root / "results" / "runs")
    free = shutil.disk_usage(where).free
    sizes = ", ".join(f"{m} {_mb(s.final)}" for m, s in storage.per_method.items())
    detail = (
        f"{_gb(free)} free on {_show(where, root)}; the grid needs {_gb(storage.total)}: "
        f"{storage.unfinished} of {storage.runs} run(s) unfinished x final weights ({sizes}) "
        f"+ {_gb(storage.job_bytes)} for one training job's checkpoint and its temporary copy"
    )
    if free < storage.total:
        return Check("disk", False, f"{detail}; short by {_gb(storage.total - free)}")
    return Check("disk", True, detail)


def _patches(params: dict[str, Any]) -> dict[tuple[int, ...], tuple[list[str], Any]]:
    """Each training patch of the grid's datasets: the datasets that use it and the first
    one's training config."""
    from semiseg3d.config.run import config_from_mapping
    from semiseg3d.grid import run_config as rc

    out: dict[tuple[int, ...], tuple[list[str], Any]] = {}
    for dataset in sorted({key.dataset for key in rc.expand_grid(params)}):
        cfg = config_from_mapping(rc.dataset_settings(params, dataset))
        out.setdefault(tuple(cfg.patch), ([], cfg))[0].append(dataset)
    return out


# -- the workspace -----------------------------------------------------------------------------


def _probe_write(folder: Path) -> str | None:
    """Create and remove a file in ``folder``; the reason it failed, or None."""
    try:
        fd, name = tempfile.mkstemp(prefix=".doctor.", suffix=".tmp", dir=folder)
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__
    os.close(fd)
    os.unlink(name)
    return None


def check_writable(
    root: Path, name: str, probe: Callable[[Path], str | None] = _probe_write
) -> Check:
    folder = root / name
    label = f"write {name}/"
    if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
        return Check(label, False, f"{_show(folder, root)} is a file, not a folder; move it away")
    target = folder if folder.is_dir() else _existing(folder)
    reason = probe(target)
    where = _show(folder, root)
    if target != folder:
        where = f"{_show(target, root)} (where {where} will be created)"
    if reason is not None:
        return Check(label, False, f"cannot create a file in {where}: {reason}")
    return Check(label, True, f"{where} is writable")


def stale_temporaries(root: Path, now: float | None = None) -> list[Path]:
    """Temporaries of killed writes under the workspace folders, older than
    :data:`STALE_AFTER_S` (younger ones may belong to a command still running)."""
    from semiseg3d.io.atomic import is_temporary

    now = time.time() if now is None else now
    found: list[Path] = []

    def walk(folder: Path) -> Iterator[Path]:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            return
        for entry in entries:
            stale_name = is_temporary(entry.name) or (
                entry.name.startswith(".") and entry.name.endswith(".old") and entry.is_dir()
            )
            if stale_name:
                yield Path(entry.path)
            elif entry.is_dir(follow_symlinks=False) and entry.name not in (".dvc", ".git"):
                yield from walk(Path(entry.path))

    for name in WORKSPACE_FOLDERS:
        for path in walk(root / name):
            try:
                age = now - path.lstat().st_mtime
            except OSError:
                continue
            if age > STALE_AFTER_S:
                found.append(path)
    return sorted(found)


def check_temporaries(root: Path) -> Check:
    stale = [_show(p, root) for p in stale_temporaries(root)]
    if not stale:
        return Check(
            "temporaries", True, f"none older than 1 h under {', '.join(WORKSPACE_FOLDERS)}"
        )
    return Check(
        "temporaries",
        False,
        f"{len(stale)} left by killed writes, e.g. {stale[0]}; rerun the command that writes "
        "that output (it removes them) or delete them",
    )


def check_shared() -> Check:
    from semiseg3d.paths import shared_dir

    env = os.environ.get("SEMISEG3D_SHARED")
    folder = shared_dir()
    if folder.is_dir():
        return Check("shared", True, f"{folder}" + (" (SEMISEG3D_SHARED)" if env else ""))
    if env:
        return Check("shared", False, f"SEMISEG3D_SHARED={env} is not a folder")
    return Check(
        "shared",
        True,
        f"{folder} not found (optional: the tests that need it skip; set SEMISEG3D_SHARED=DIR)",
    )


# -- all together ------------------------------------------------------------------------------


def run_checks(
    root: Path, params_file: Path, overlays: Sequence[Path] = (), run_bf16_check: bool = False
) -> list[Check]:
    """Every check, in the order they are printed."""
    checks = [check_python(), check_torch(), check_cpu(), check_cuda()]
    params: dict[str, Any] | None = None
    try:
        from semiseg3d.grid import run_config as rc

        if not params_file.is_file():
            raise FileNotFoundError(
                f"{params_file} not found (run doctor in the checkout or pass --params)"
            )
        params = rc.load_params(params_file, list(overlays))
        rc.validate_params(params, source=", ".join(map(str, [params_file, *overlays])))
    except (Semiseg3dError, FileNotFoundError) as exc:
        checks.append(Check("params", False, str(exc)))
        params = None
    if params is not None:
        sources = ", ".join(map(str, [params_file, *overlays]))
        checks.append(Check("params", True, f"{sources}: valid"))
        checks += check_amp(_patches(params), run_bf16_check)
        checks.append(check_disk(grid_storage(params, root), root))
    checks += [check_writable(root, name) for name in WORKSPACE_FOLDERS]
    checks.append(check_temporaries(root))
    checks.append(check_shared())
    return checks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``semiseg3d doctor``."""
    parser.add_argument(
        "--params",
        type=Path,
        default=Path("params.yaml"),
        help="params.yaml (default: ./params.yaml)",
    )
    parser.add_argument(
        "--configfile",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="an overlay, as given to snakemake --configfile (repeatable)",
    )
    parser.add_argument(
        "--bf16-check",
        action="store_true",
        help="run the CPU bf16 self-check for each configured patch where none is cached "
        "(about a minute at 112x112x80 on two cores, once per machine)",
    )


def main(args: argparse.Namespace) -> int:
    """Run ``semiseg3d doctor``; 0 when every check passes, else 1."""
    root = Path.cwd()
    checks = run_checks(root, args.params, args.configfile, args.bf16_check)
    for check in checks:
        print(check.line(), flush=True)
    return 0 if all(c.ok for c in checks) else 1
