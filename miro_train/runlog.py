"""The run's log: a CSV row every N steps, optional TensorBoard, a loss-curve PNG at the end."""

from __future__ import annotations

import csv
from pathlib import Path

from miro_data.common import MiroError, atomic_path

FIELDS = ("step", "loss", "lr", "steps_per_s", "elapsed_s")


class RunLog:
    """Appends to RUN/log.csv; on resume, rows past the checkpoint's step are dropped."""

    def __init__(self, run: Path, resume_step: int | None, tensorboard: bool = False) -> None:
        self.path = run / "log.csv"
        rows = self.rows() if resume_step is not None else []
        with atomic_path(self.path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, FIELDS)
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
            self.tb = SummaryWriter(str(run / "tensorboard"))

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with self.path.open(newline="") as f:
            return [row for row in csv.DictReader(f) if _complete(row)]

    def write(self, step: int, loss: float, lr: float, steps_per_s: float, elapsed: float) -> None:
        row = (step, f"{loss:.6f}", f"{lr:.3e}", f"{steps_per_s:.3f}", f"{elapsed:.1f}")
        with self.path.open("a", newline="") as f:
            csv.writer(f).writerow(row)
        if self.tb is not None:
            self.tb.add_scalar("loss", loss, step)
            self.tb.add_scalar("lr", lr, step)

    def plot(self, png: Path, title: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows()
        if not rows:
            return
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
        ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], lw=1.2)
        ax.set(xlabel="step", ylabel="flow-matching loss", title=title)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        with atomic_path(png) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _complete(row: dict) -> bool:
    """Whether a row was written whole (a run killed mid-write can leave a cut last line)."""
    if None in row:  # more fields than the header: two rows run together
        return False
    try:
        return all(isinstance(float(row[k]), float) for k in FIELDS)
    except (TypeError, ValueError, KeyError):
        return False
