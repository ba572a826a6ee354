"""The run's log: a CSV row every N steps, optional TensorBoard, a loss-curve PNG at the end.
Where they live and how they are read back is checkpoint.py's (the run folder's one home)."""

from __future__ import annotations

import csv
from pathlib import Path

from miro_data.common import MiroError, atomic_path
from miro_train.checkpoint import LOG_FIELDS, log_path, loss_plot, read_log, tensorboard_dir


class RunLog:
    """Appends to RUN/log.csv; on resume, rows past the checkpoint's step are dropped."""

    def __init__(self, run: Path, resume_step: int | None, tensorboard: bool = False) -> None:
        self.run, self.path = run, log_path(run)
        rows = read_log(run) if resume_step is not None else []
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, LOG_FIELDS)
            writer.writeheader()
            writer.writerows(r for r in rows if int(r["step"]) <= (resume_step or 0))
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise MiroError(
                    "--tensorboard needs the tensorboard package (pip install tensorboard)"
                ) from None
            self.tb = SummaryWriter(str(tensorboard_dir(run)))

    def write(self, step: int, loss: float, lr: float, steps_per_s: float, elapsed: float) -> None:
        row = (step, f"{loss:.6f}", f"{lr:.3e}", f"{steps_per_s:.3f}", f"{elapsed:.1f}")
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow(row)
        if self.tb is not None:
            self.tb.add_scalar("loss", loss, step)
            self.tb.add_scalar("lr", lr, step)

    def plot(self, title: str) -> None:
        """Draw the loss curve of every row into RUN/loss.png."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = read_log(self.run)
        if not rows:
            return
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
        ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], lw=1.2)
        ax.set(xlabel="step", ylabel="flow-matching loss", title=title)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(loss_plot(self.run)) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
