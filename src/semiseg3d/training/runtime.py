"""Runtime of a training run: device, mixed precision, memory format, and feedback.

- :class:`Precision`: ``cfg.device``, ``cfg.amp`` and ``cfg.channels_last`` resolved by
  :func:`semiseg3d.accel.resolve_runtime` (bf16 autocast on CUDA and on CPUs with
  AVX-512 BF16 / AMX under ``auto``), ``cfg.compile`` by
  :func:`semiseg3d.compiled.resolve_compile`, plus the ``GradScaler`` (fp16 only).
- :class:`RunFeedback`: the plain log ``DIR/train.log``, a tqdm progress bar on stderr
  (it/s and ETA; off when stderr is not a terminal, then a log line every
  ``log_every`` iterations instead), and per-iteration values through dvclive in
  ``DIR/live`` (never writing a ``dvc.yaml``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from semiseg3d.accel import Acceleration, resolve_runtime
from semiseg3d.bf16check import Bf16Probe
from semiseg3d.compiled import CompileChoice, resolve_compile
from semiseg3d.config.run import TrainConfig
from semiseg3d.io.atomic import write_text_atomic
from semiseg3d.methods import get_method

__all__ = [
    "Precision",
    "training_probe",
    "RunFeedback",
    "LOG_NAME",
    "LIVE_NAME",
]

LOG_NAME = "train.log"
LIVE_NAME = "live"


def training_probe(cfg: TrainConfig) -> Bf16Probe:
    """The CPU bf16 self-check of a training run: the method's freshly built networks, in
    train mode, on one batch of ``(batch_labeled [+ batch_unlabeled], 1, *patch)``."""
    method = get_method(cfg)
    batch = cfg.batch_labeled + (cfg.batch_unlabeled if method.uses_unlabeled else 0)
    return Bf16Probe(
        build=lambda: list(method.build()[1].values()),
        shape=(batch, 1, *cfg.patch),
        train=True,
        label=cfg.method,
    )


@dataclass
class Precision:
    """Mixed precision and memory format of a run (:mod:`semiseg3d.accel`).

    Attributes:
        accel: the resolved :class:`~semiseg3d.accel.Acceleration` (device, autocast dtype
            or None for float32, channels-last 3D or not).
        scaler: a ``torch.amp.GradScaler`` (enabled for fp16 only; a disabled scaler is a
            no-op that still has a state dict).
        compile: the resolved ``compile`` key (:mod:`semiseg3d.compiled`).
    """

    accel: Acceleration
    scaler: torch.amp.GradScaler
    compile: CompileChoice = CompileChoice(False, "off")

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> Precision:
        """``cfg.device``, ``cfg.amp`` and ``cfg.channels_last`` resolved (CPU and CUDA alike).

        Raises:
            InputError: ``device: cuda`` without CUDA, ``amp: fp16`` on a CPU,
                ``amp: bf16`` on a CPU whose bf16 self-check fails for the run's networks
                and batch, or ``compile: on`` where inductor cannot run.
        """
        accel = resolve_runtime(cfg.device, cfg.amp, cfg.channels_last, training_probe(cfg))
        scaler = torch.amp.GradScaler(accel.device.type, enabled=accel.dtype == torch.float16)
        return cls(accel=accel, scaler=scaler, compile=resolve_compile(cfg.compile, accel.device))

    def describe(self) -> dict[str, Any]:
        """Plain values for logs and ``config.yaml``: device, precision, channels_last,
        compile (and the notes of ``auto`` choices)."""
        out = self.accel.describe()
        out["compile"] = self.compile.enabled
        if self.compile.note:
            out["compile_note"] = self.compile.note
        return out

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast context for the forward pass (a no-op in fp32)."""
        return self.accel.autocast()


def _truncate_tsv(path: Path, keep_below: int) -> None:
    """Drop the rows of a dvclive metric file whose step is >= ``keep_below``."""
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or "step" not in rows[0]:
        return
    col = rows[0].index("step")
    kept = [rows[0]] + [r for r in rows[1:] if len(r) > col and int(float(r[col])) < keep_below]
    if len(kept) != len(rows):
        text = io.StringIO()
        csv.writer(text, delimiter="\t", lineterminator="\n").writerows(kept)
        write_text_atomic(path, text.getvalue())  # a full disk must not cut the history


class RunFeedback:
    """Progress bar, plain log file and dvclive metrics of one run.

    Args:
        out_dir: the run folder.
        total: iterations of the run.
        start: the first iteration of this session (> 0 when resuming).
        log_every: iterations between log lines on stderr when there is no progress bar.
        elapsed: seconds already spent in earlier sessions of the run.
        progress: show a tqdm bar (None = when stderr is a terminal).
    """

    def __init__(
        self,
        out_dir: str | Path,
        total: int,
        start: int = 0,
        *,
        log_every: int = 10,
        elapsed: float = 0.0,
        progress: bool | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.total = int(total)
        self.start = int(start)
        self.log_every = max(1, int(log_every))
        self.elapsed_before = float(elapsed)
        self._t0 = time.monotonic()
        self.logger = logging.getLogger(f"semiseg3d.train.{id(self)}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self.out_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.out_dir / LOG_NAME, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        self.logger.addHandler(handler)
        self._bar = None
        if progress is None:
            progress = sys.stderr.isatty()
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(
                total=self.total, initial=self.start, file=sys.stderr, unit="it", dynamic_ncols=True
            )
        self.live = self._open_live()

    def _open_live(self) -> Any:
        from dvclive import Live

        class LocalLive(Live):
            """dvclive without its DVC / Git integration: plain files in ``dir`` only.

            ``Live`` looks for a DVC repository from the working directory and, when
            there is none, runs ``dvc init`` in the enclosing Git checkout; a training run
            must not touch the repository it is started from.
            """

            def _init_dvc(self) -> None:
                self._dvc_file = "dvc.yaml"  # never written: dvcyaml=None

        live_dir = self.out_dir / LIVE_NAME
        resume = self.start > 0 and live_dir.is_dir()
        if resume:
            for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
                _truncate_tsv(tsv, self.start)
        # dvclive logs "Logging to experiment ..." on its own logger; keep stderr quiet.
        logging.getLogger("dvclive").setLevel(logging.WARNING)
        live = LocalLive(
            dir=str(live_dir), dvcyaml=None, save_dvc_exp=False, resume=resume, report=None
        )
        live.step = self.start
        return live

    @property
    def elapsed(self) -> float:
        """Training seconds of the whole run so far (all sessions)."""
        return self.elapsed_before + time.monotonic() - self._t0

    def info(self, message: str) -> None:
        """A line in ``train.log`` and on stderr."""
        self.logger.info(message)
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def iteration(self, t: int, values: Mapping[str, float]) -> None:
        """Record the values of iteration ``t`` (0-based): dvclive, log file, progress."""
        for name, value in values.items():
            self.live.log_metric(f"train/{name}", float(value))
        self.live.next_step()
        text = " ".join(f"{k}={v:.5g}" for k, v in values.items())
        self.logger.info(f"iter {t + 1}/{self.total} {text}")
        done = t + 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(text[:80], refresh=False)
        elif done % self.log_every == 0 or done == self.total:
            rate = (done - self.start) / max(time.monotonic() - self._t0, 1e-9)
            eta = (self.total - done) / rate if rate > 0 else float("inf")
            print(
                f"iter {done}/{self.total} {rate:.3g} it/s eta {eta:.0f}s {text}",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        """Close the progress bar, dvclive and the log file."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        with contextlib.suppress(Exception):
            self.live.end()
        for handler in list(self.logger.handlers):
            handler.close()
            self.logger.removeHandler(handler)

    @contextlib.contextmanager
    def session(self) -> Iterator[RunFeedback]:
        """``with feedback.session():`` closes everything on exit, also on errors."""
        try:
            yield self
        finally:
            self.close()
