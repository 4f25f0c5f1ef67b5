"""Run logs: ``metrics.jsonl`` (one line per log or evaluation), TensorBoard and wandb."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from dial.errors import ConfigError


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value


class RunLogger:
    """Writes every logged row to ``metrics.jsonl`` and to the enabled backends."""

    def __init__(self, run_dir: Path, report_to: list[str], config: dict[str, Any]) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.tensorboard = None
        self.wandb = None
        unknown = set(report_to) - {"tensorboard", "wandb"}
        if unknown:
            raise ConfigError(f"train.report_to: unknown logger(s) {sorted(unknown)}")
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
        if "wandb" in report_to:
            try:
                import wandb
            except ImportError as exc:
                raise ConfigError("report_to wandb needs `pip install dial[logging]`") from exc
            self.wandb = wandb.init(config=config, dir=str(run_dir), name=run_dir.name)

    def truncate_after(self, step: int) -> None:
        """Forget rows logged after `step` (a resumed run logs them again), and a last row cut
        short by a crash; the file is replaced atomically."""
        if not self.path.exists():
            return
        text = self.path.read_text()
        lines = text.splitlines()
        if lines and not text.endswith("\n"):
            lines.pop()  # a crash while appending left this row unfinished
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        partial = self.path.with_name(f".{self.path.name}.tmp")
        partial.write_text("".join(line + "\n" for line in kept))
        partial.replace(self.path)

    def log(self, row: dict[str, Any], prefix: str) -> None:
        """Append a row; numeric fields also go to the backends as ``prefix/name``."""
        with self.path.open("a") as handle:
            handle.write(json.dumps({k: _jsonable(v) for k, v in row.items()}) + "\n")
        step = row["step"]
        scalars = {
            f"{prefix}/{k}": v
            for k, v in row.items()
            if k not in ("step", "split", "epoch")
            and isinstance(v, (int, float))
            and not isinstance(v, bool)
        }
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()
