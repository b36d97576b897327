"""The training loop of every method: the dual network (spec 2-4), SupOnly and the
baselines (UA-MT, DTC, MC-Net(+), MCF, BCP; :mod:`semiseg3d.methods`).

Everything method-specific (networks, teachers, the loss of one step, EMA updates, the
step count and learning rate) comes from the run's :class:`~semiseg3d.methods.base.Method`;
the loop below is the same for all of them.

One call of :func:`train` runs (or resumes) the run in ``out_dir``:

1. If the folder already holds a config (or a checkpoint) for a different config,
   :class:`~semiseg3d.errors.InputError` names the differing keys. If ``DIR/model_final.pt``
   exists the run is done: nothing happens. Otherwise the data and lists are checked
   (:func:`~semiseg3d.training.inputs.check_inputs`: every case present and at least the patch after downsampling,
   every labeled case with a label) before the folder is created, so a refused start
   leaves nothing behind; temporaries of a killed earlier session are removed and the
   resolved config is written to ``DIR/config.yaml``.
2. Every random source is seeded from ``cfg.seed`` (:mod:`semiseg3d.training.seeding`), the
   networks are built (``dual``: :class:`~semiseg3d.models.DualNet`, ``.resnet`` = Subnet A,
   ``.vnet`` = Subnet B, one SGD optimizer each; ``suponly``: a :class:`~semiseg3d.models.VNet`
   and one optimizer; a baseline: its trained networks, one optimizer each, and its EMA
   teachers) and, when ``DIR/checkpoint.pt`` exists, everything is restored from it (the
   method's own state too, :meth:`~semiseg3d.methods.base.Method.state_dict`).
   A ``recipe: own`` config is first resolved to the original's settings
   (:func:`semiseg3d.config.registry.resolve_recipe`).
3. Iteration ``t`` (0-based) sets the learning rate of every optimizer to
   ``lr_at(cfg, t)``, takes the batch of iteration ``t`` from the stateless two-stream sampler
   (``batch_labeled`` labeled cases = the first N of the training list, then
   ``batch_unlabeled`` of the rest), runs both subnets on it, computes
   ``(loss_a, loss_b, terms) = dual_objective(...)`` (SupOnly: ``suponly_objective`` on the
   labeled batch), back-propagates ``loss_a + loss_b`` (so each optimizer sees the gradient
   of the sum, spec 2.7) and steps both optimizers.
4. Every ``cfg.checkpoint_every`` iterations the full state goes to ``DIR/checkpoint.pt``
   (atomically); at the end ``DIR/model_final.pt`` is written and the checkpoint, which
   only a resume needs, is removed (kept, and written at the last iteration too, with
   ``keep_checkpoint: true``).

A run stopped at any point and started again ends with bit-identical weights to an
uninterrupted run on the same machine (CPU; the batches are a pure function of the seed
and the iteration, and every generator state is in the checkpoint).

A non-finite loss term in ``paper`` mode raises :class:`~semiseg3d.errors.TrainingError`
naming the term and the iteration before anything is updated; the last checkpoint on disk
is the last good state. In ``code_faithful`` mode the prototype loss is NaN by design
(spec 2.6) and never reaches a parameter: it is logged, and the run stops only if a
parameter gradient becomes non-finite.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from semiseg3d.compiled import Compiler, compile_seconds
from semiseg3d.config.registry import resolve_recipe
from semiseg3d.config.run import RUNTIME_KEY, TrainConfig
from semiseg3d.data.dataset import VolumeDataset, make_loader
from semiseg3d.data.sampler import TwoStreamBatchSampler
from semiseg3d.data.transforms import gaussian_perturbation
from semiseg3d.errors import InputError, Semiseg3dError, TrainingError
from semiseg3d.io.atomic import check_output, write_text_atomic
from semiseg3d.losses.objective import first_nonfinite
from semiseg3d.methods import Method, get_method
from semiseg3d.training.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    FINAL_NAME,
    load_checkpoint,
    save_checkpoint,
    save_final,
)
from semiseg3d.training.inputs import (
    TrainInputs,
    check_inputs,
    check_run_config,
    checked_dataset,
    remove_stale_run_temps,
)
from semiseg3d.training.runtime import Precision, RunFeedback
from semiseg3d.training.seeding import (
    capture_rng_state,
    derive_seed,
    make_generator,
    restore_rng_state,
    seed_everything,
)

__all__ = ["TrainResult", "train", "STOP_AFTER_ENV"]

#: testing hook: stop (as if killed) once this many iterations are done in the session
STOP_AFTER_ENV = "SEMISEG3D_STOP_AFTER"


@dataclass
class TrainResult:
    """What one call of :func:`train` did.

    Attributes:
        out_dir: the run folder.
        iteration: optimizer steps done in the run (all sessions).
        finished: ``model_final.pt`` exists.
        skipped: the run was already finished; nothing was trained.
        resumed_from: iteration of the checkpoint this session started from (0 = fresh).
        seconds: training seconds of the whole run (all sessions).
        history: per-iteration values logged in this session (term name -> float), in order.
        iteration_seconds: wall seconds of each iteration of this session (loading the
            batch, the step and its logging), in order.
    """

    out_dir: Path
    iteration: int
    finished: bool
    skipped: bool = False
    resumed_from: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)
    iteration_seconds: list[float] = field(default_factory=list)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists() or candidate.is_symlink():
            break
        missing = candidate
    return missing


def _undo_setup(out: Path, created: Path | None, before: set[str]) -> None:
    """Remove what this command created in a session that failed before its first step:
    the run folder if it made it (and the parents it made, while they are empty: another
    run may have started in one meanwhile), else the new entries of the folder."""
    if created is not None:
        shutil.rmtree(out, ignore_errors=True)
        for parent in out.parents:
            if parent == created.parent:
                break
            try:
                parent.rmdir()  # only an empty folder
            except OSError:
                break
        return
    for name in set(os.listdir(out)) - before if out.is_dir() else ():
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _build_networks(
    method: Method,
) -> tuple[nn.Module, dict[str, nn.Module], dict[str, nn.Module]]:
    """The model, its trained subnets by name (dual: ``resnet`` = A, ``vnet`` = B) and the
    method's EMA teachers, freshly seeded."""
    torch.manual_seed(derive_seed(method.cfg.seed, "model"))
    return method.networks()


def _stop_after(stop_after: int | None) -> int | None:
    if stop_after is not None:
        return stop_after
    raw = os.environ.get(STOP_AFTER_ENV)
    return int(raw) if raw else None


def _as_floats(terms: dict[str, Any]) -> dict[str, float]:
    """Loss terms (tensors or numbers) as Python floats, with one device sync."""
    names = list(terms)
    tensors = [torch.as_tensor(terms[n]).detach().float().reshape(()).cpu() for n in names]
    values = torch.stack(tensors).tolist() if tensors else []
    return dict(zip(names, values, strict=True))


def _grads_finite(nets: dict[str, nn.Module]) -> bool:
    grads = [p.grad for net in nets.values() for p in net.parameters() if p.grad is not None]
    if not grads:
        return True
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


class _Run:
    """State of one training session (built by :func:`train`)."""

    def __init__(
        self,
        cfg: TrainConfig,
        out_dir: Path,
        progress: bool | None,
        inputs: TrainInputs,
        precision: Precision,
        dataset: VolumeDataset,
    ) -> None:
        self.cfg = cfg
        self.out_dir = out_dir
        self.precision = precision
        self.device = precision.accel.device
        self.compiler = Compiler(precision.compile.enabled)
        seed_everything(cfg.seed)
        self.method = get_method(cfg)
        self.total = self.method.total_steps()
        self._build_data(inputs, dataset)
        self.model, self.nets, self.teachers = _build_networks(self.method)
        self.model.to(self.device)
        self.model = self.precision.accel.prepare(self.model)
        self.model.train()
        for teacher in self.teachers.values():  # teachers stay in train mode (dropout, BN)
            self.precision.accel.prepare(teacher.to(self.device)).train()
        self.method.attach(self.nets, self.teachers)
        self.optimizers = {
            name: torch.optim.SGD(
                net.parameters(),
                lr=cfg.lr,
                momentum=cfg.momentum,
                weight_decay=cfg.weight_decay,
            )
            for name, net in self.nets.items()
        }
        self.pgl_gen = make_generator(cfg.seed, "pgl", self.device)
        self.noise_gen = make_generator(cfg.seed, "perturbation", self.device)
        self.start = 0
        elapsed = 0.0
        ckpt_path = out_dir / CHECKPOINT_NAME
        self.checkpoint = None
        if ckpt_path.is_file():
            self.checkpoint = load_checkpoint(ckpt_path)
            self.start = int(self.checkpoint["iteration"])
            elapsed = float(self.checkpoint["logger"].get("elapsed", 0.0))
        self.feedback = RunFeedback(
            out_dir,
            self.total,
            self.start,
            log_every=max(1, min(50, self.total // 20)),
            elapsed=elapsed,
            progress=progress,
        )

    def _build_data(self, inputs: TrainInputs, dataset: VolumeDataset) -> None:
        cfg = self.cfg
        n_l, n_u, bu = inputs.n_labeled, inputs.n_unlabeled, inputs.batch_unlabeled
        self.n_labeled, self.n_unlabeled = n_l, n_u
        self.dataset = dataset
        self.sampler = TwoStreamBatchSampler(
            range(n_l), range(n_l, n_l + n_u), cfg.batch_labeled, bu, seed=cfg.seed
        )

    def runtime_record(self) -> dict[str, Any]:
        """What this session resolved: device, precision, channels_last, volume cache."""
        return {**self.precision.describe(), "cache_volumes": self.dataset.cache}

    # -- state ----------------------------------------------------------------------------
    def restore(self, loader_gen: torch.Generator) -> None:
        """Load the checkpoint found at start-up into every component."""
        ckpt = self.checkpoint
        if ckpt is None:
            return
        for name, net in self.nets.items():
            net.load_state_dict(ckpt["models"][name])
        for name, opt in self.optimizers.items():
            opt.load_state_dict(ckpt["optimizers"][name])
        for name, teacher in self.teachers.items():
            teacher.load_state_dict(ckpt["teachers"][name])
        if "method_state" in ckpt:
            self.method.load_state_dict(ckpt["method_state"])
        self.precision.scaler.load_state_dict(ckpt["scaler"])
        restore_rng_state(ckpt["rng"])
        self.pgl_gen.set_state(ckpt["pgl_generator"])
        self.noise_gen.set_state(ckpt["rng"]["perturbation"])
        loader_gen.set_state(ckpt["loader_generator"])
        self.checkpoint = None

    def save(self, iteration: int, loader_state: torch.Tensor, last: dict[str, float]) -> None:
        """Write the full state after ``iteration`` optimizer steps."""
        rng = capture_rng_state()
        rng["perturbation"] = self.noise_gen.get_state()
        extra: dict[str, Any] = {}
        if self.teachers:
            extra["teachers"] = {n: t.state_dict() for n, t in self.teachers.items()}
        method_state = self.method.state_dict()
        if method_state:  # SASSNet's discriminator + Adam, SS-Net's memory
            extra["method_state"] = method_state
        save_checkpoint(
            self.out_dir / CHECKPOINT_NAME,
            {
                **extra,
                "iteration": iteration,
                "config": self.cfg.to_dict(),
                "models": {name: net.state_dict() for name, net in self.nets.items()},
                "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
                "scaler": self.precision.scaler.state_dict(),
                "rng": rng,
                "pgl_generator": self.pgl_gen.get_state(),
                "loader_generator": loader_state,
                "logger": {"elapsed": self.feedback.elapsed, "last": dict(last)},
            },
        )

    # -- one iteration ----------------------------------------------------------------------
    def _input(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        if cfg.perturbation == "gaussian":
            x = gaussian_perturbation(x, cfg.noise_std, 2.0 * cfg.noise_std, self.noise_gen)
        return self.precision.accel.prepare(x)

    def forward(self, net: nn.Module, x: torch.Tensor, *, perturb: bool = False) -> Any:
        """``net(x)`` under the run's autocast and memory format, tensor outputs in float32
        (a tuple or list of tensors keeps its kind). ``perturb``: apply the configured
        input perturbation first (the dual method's and SupOnly's input path). With
        ``compile`` on, ``net``'s compiled wrapper runs (same parameters)."""
        x = self._input(x) if perturb else self.precision.accel.prepare(x)
        with self.precision.autocast():
            out = self.compiler(net)(x)
        if isinstance(out, torch.Tensor):
            return out.float()
        return type(out)(o.float() for o in out)

    def step(self, t: int, batch: dict[str, Any]) -> dict[str, float]:
        """Run iteration ``t`` on ``batch``; return the logged values."""
        cfg = self.cfg
        lr = self.method.lr(t)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr
        image = batch["image"].to(self.device, non_blocking=True)
        label = batch["label"].to(self.device, non_blocking=True)
        bl = cfg.batch_labeled
        label_l = label[:bl]
        if bool((label_l < 0).any()):
            cases = [
                c for c, lab in zip(batch["case"][:bl], label_l, strict=True) if (lab < 0).any()
            ]
            raise InputError(f"labeled case(s) {cases} have no label in {cfg.data_dir}")
        self.label_u = label[bl:]  # -1 where absent; diagnostics only, never a loss
        total, terms = self.method.loss(self, t, image, label_l)
        values = {**_as_floats(terms), "lr": lr}
        bad_name = first_nonfinite(terms)
        if bad_name is not None and cfg.mode == "paper":
            raise TrainingError(self._nonfinite_message(bad_name, t, values))
        for opt in self.optimizers.values():
            opt.zero_grad(set_to_none=True)
        scaler = self.precision.scaler
        scaler.scale(total).backward()
        if bad_name is not None and not scaler.is_enabled() and not _grads_finite(self.nets):
            raise TrainingError(
                self._nonfinite_message(bad_name, t, values) + " (gradients non-finite)"
            )
        for opt in self.optimizers.values():
            scaler.step(opt)
        scaler.update()
        self.method.after_step(t)
        return values

    def _nonfinite_message(self, name: str, t: int, values: dict[str, float]) -> str:
        ckpt = self.out_dir / CHECKPOINT_NAME
        kept = (
            f"last good checkpoint {ckpt} kept"
            if ckpt.is_file()
            else "no checkpoint was written yet"
        )
        return (
            f"non-finite loss term '{name}' = {values.get(name)} at iteration {t} "
            f"(mode {self.cfg.mode}); stopped without updating the weights; {kept}"
        )


def _compile_line(before: float | None, span: str, seconds: float) -> str:
    """The ``train.log`` line on the time ``torch.compile`` took in ``span`` (which took
    ``seconds`` in all)."""
    now = compile_seconds()
    if before is None or now is None:
        return f"compile: {span} took {seconds:.1f} s (this PyTorch reports no compile time)"
    return f"compile: {now - before:.1f} s compiling of the {seconds:.1f} s of {span}"


def _drop_checkpoint(cfg: TrainConfig, out: Path) -> None:
    """After the run finished: remove the resumable state, unless ``keep_checkpoint``."""
    if not cfg.keep_checkpoint:
        (out / CHECKPOINT_NAME).unlink(missing_ok=True)


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    stop_after: int | None = None,
    progress: bool | None = None,
) -> TrainResult:
    """Train (or resume, or skip) the run in ``out_dir``.

    Args:
        cfg: the validated run config.
        out_dir: the run folder (created if needed).
        stop_after: testing hook: return once this many iterations of the run are done,
            as if the process had been killed there (no extra checkpoint is written).
            Default: the ``SEMISEG3D_STOP_AFTER`` environment variable, else no stop.
        progress: show a tqdm bar (None = when stderr is a terminal).

    Returns:
        A :class:`TrainResult`.

    Raises:
        InputError: bad data, lists or a run folder holding another config.
        TrainingError: a non-finite loss term (``paper`` mode) or gradient.
    """
    out = Path(out_dir)
    # a file in the way, or a non-empty folder that is not a run folder, is not ours
    check_output(out, folder=True, ours=(CONFIG_NAME, CHECKPOINT_NAME, FINAL_NAME))
    cfg = resolve_recipe(cfg)
    final = out / FINAL_NAME
    if out.is_dir():
        check_run_config(cfg, out, write=False)
        if final.is_file():
            message = f"{final} exists: the run is finished, nothing to do"
            print(f"semiseg3d train: {message}")
            _drop_checkpoint(cfg, out)
            total = get_method(cfg).total_steps()
            return TrainResult(out_dir=out, iteration=total, finished=True, skipped=True)
    # everything checkable is checked before the run folder is created or written to
    precision = Precision.from_config(cfg)
    inputs = check_inputs(cfg)
    dataset = checked_dataset(cfg, inputs)
    created = _first_missing(out)
    before = set(os.listdir(out)) if created is None else set()
    out.mkdir(parents=True, exist_ok=True)
    session = _Session()
    try:
        return _train_session(cfg, out, stop_after, progress, inputs, precision, dataset, session)
    except BaseException:
        if not session.started:
            # failed before its first iteration (disk full, a bad checkpoint ...): leave
            # the folder as it was; a failure later keeps the run's resumable state
            _undo_setup(out, created, before)
        raise


@dataclass
class _Session:
    """Whether a training session got as far as its first optimizer step (its first batch
    loaded); before that, a failure undoes what the session wrote."""

    started: bool = False


def _train_session(
    cfg: TrainConfig,
    out: Path,
    stop_after: int | None,
    progress: bool | None,
    inputs: TrainInputs,
    precision: Precision,
    dataset: VolumeDataset,
    session: _Session,
) -> TrainResult:
    """The part of :func:`train` that writes into the run folder."""
    final = out / FINAL_NAME
    remove_stale_run_temps(out)
    # (compared above with what the folder held, if anything)
    write_text_atomic(out / CONFIG_NAME, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    stop = _stop_after(stop_after)
    run = _Run(cfg, out, progress, inputs, precision, dataset)
    record = {**cfg.to_dict(), RUNTIME_KEY: run.runtime_record()}
    write_text_atomic(out / CONFIG_NAME, yaml.safe_dump(record, sort_keys=False))
    result = TrainResult(out_dir=out, iteration=run.start, finished=False, resumed_from=run.start)
    with run.feedback.session() as fb:
        loader = make_loader(
            run.dataset,
            run.sampler.with_iterations(run.total, run.start),
            cfg.num_workers,
            seed=derive_seed(cfg.seed, "loader"),
        )
        loader_gen = loader.generator
        assert loader_gen is not None
        run.restore(loader_gen)
        # The loader generator is saved as it is before this session's iterator draws the
        # worker base seed, so an uninterrupted and a resumed run store the same state.
        loader_state = loader_gen.get_state()
        accel = run.precision.accel
        fb.info(
            f"precision {accel.precision} (amp '{cfg.amp}'), channels_last "
            f"{'on' if accel.channels_last else 'off'} (config '{cfg.channels_last}') on {accel.device}"
            + (f"; {accel.note}" if accel.note else "")
        )
        choice = run.precision.compile
        fb.info(
            f"compile {'on' if choice.enabled else 'off'} (config '{choice.setting}')"
            + (f"; {choice.note}" if choice.note else "")
        )
        compile_before = compile_seconds() if choice.enabled else None
        verb = f"resuming at iteration {run.start}" if run.start else "starting"
        fb.info(
            f"{verb}: method {cfg.method}, mode {cfg.mode}, {run.n_labeled} labeled + "
            f"{run.n_unlabeled} unlabeled cases, {run.total} iterations, device "
            f"{run.device}, seed {cfg.seed}, out {out}"
        )
        last: dict[str, float] = {}
        t = run.start
        tick = time.monotonic()
        for batch in loader:
            if stop is not None and t >= stop:
                break
            session.started = True  # from here on the folder holds a run's log and state
            try:
                last = run.step(t, batch)
            except Semiseg3dError as exc:
                fb.logger.error(f"error: {exc}")
                raise
            t += 1
            result.iteration = t
            result.history.append(last)
            fb.iteration(t - 1, last)
            now = time.monotonic()
            result.iteration_seconds.append(now - tick)
            if choice.enabled and t == run.start + 1:
                fb.info(_compile_line(compile_before, "the first iteration", now - tick))
            tick = now
            last_step = t == run.total
            if (t % cfg.checkpoint_every == 0 and not last_step) or (
                last_step and cfg.keep_checkpoint
            ):
                run.save(t, loader_state, last)
        result.seconds = fb.elapsed
        if choice.enabled and t > run.start:
            fb.info(_compile_line(compile_before, "this session", result.seconds))
        if t < run.total:
            fb.info(f"stopped after iteration {t} of {run.total} (testing hook)")
            return result
        save_final(
            final,
            {name: net.state_dict() for name, net in run.nets.items()},
            cfg.to_dict(),
            run.total,
        )
        result.finished = True
        _drop_checkpoint(cfg, out)
        fb.info(
            f"finished {run.total} iterations in {result.seconds:.1f} s; wrote {final}"
            + (" " + " ".join(f"{k}={v:.4g}" for k, v in last.items()) if last else "")
        )
    return result
