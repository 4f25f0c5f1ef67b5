"""Run by tests/test_methods.py under `accelerate launch`: train, then each rank writes its own
copy of the trainable weights and of the critic so that the test can compare the ranks."""

from __future__ import annotations

import sys
from pathlib import Path

from safetensors.torch import save_file

from dial.config import load_config
from dial.training.trainer import TrainingRun


def main() -> None:
    config_path, out_dir = sys.argv[1], Path(sys.argv[2])
    run = TrainingRun(load_config(config_path), log=lambda *_: None)
    run.setup()
    run.train()
    model = run.accelerator.unwrap_model(run.model)
    weights = {
        f"model.{name}": p.detach().clone().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }
    if run.domain_loss is not None:
        weights.update(
            {f"domain.{k}": v.clone().contiguous() for k, v in run.domain_loss.state_dict().items()}
        )
    save_file(weights, str(out_dir / f"rank{run.rank}.safetensors"))
    run.cleanup()


if __name__ == "__main__":
    main()
