"""Keeping parameters outside the DDP-wrapped model identical on every process.

The WDGRL critic and DANN's domain classifier are trained beside the reward model. They are
not wrapped in DDP (the critic's gradient penalty needs a double backward, and its encoder-side
use takes its parameters detached); instead their gradients are averaged over the processes
right before every optimizer step, so all ranks hold identical weights after each step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from accelerate import Accelerator


def average_gradients(accelerator: Accelerator, parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace every gradient by its mean over the processes (a no-op in one process)."""
    if accelerator.num_processes == 1:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            parameter.grad = accelerator.reduce(parameter.grad, reduction="mean")


class GradientAveragingOptimizer:
    """An optimizer whose ``step`` first averages its parameters' gradients over processes."""

    def __init__(self, optimizer: torch.optim.Optimizer, accelerator: Accelerator) -> None:
        self.optimizer = optimizer
        self.accelerator = accelerator

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def _parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def step(self) -> None:
        average_gradients(self.accelerator, self._parameters())
        self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)
