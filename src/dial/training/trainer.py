"""The training recipe: setup -> train -> save -> cleanup, readable top to bottom.

Runs in one process or under ``accelerate launch`` (DDP on GPUs, gloo on CPUs). Each process
takes every world-size-th batch of the epoch's order (the order is a pure function of seed and
epoch), so a resumed run replays exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from dial.config import RunConfig
from dial.data.datasets import prepare_run_data
from dial.data.tokenize import collate, model_inputs, plan_batches, sequence_format
from dial.errors import ConfigError, DataError
from dial.evaluation.evaluate import evaluate
from dial.models.reward_model import RewardModel, build_reward_model
from dial.objectives.task_losses import build_task_loss
from dial.training import checkpoint as ckpt
from dial.training.logging import RunLogger

SCHEDULERS = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
NO_DECAY = ("bias", "norm", "LayerNorm", "layernorm")


class TrainingRun:
    """One training run of a reward model on source data (method ``source_only``)."""

    def __init__(self, config: RunConfig, log=print) -> None:
        self.config = config
        self.print = log
        self.run_dir = Path(config.output_dir)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        config = self.config
        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        self.is_main = self.accelerator.is_main_process
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        existing = ckpt.list_checkpoints(self.run_dir)
        if existing and not config.resume:
            raise ConfigError(
                f"{self.run_dir} already holds checkpoints: pass --resume to continue that run, "
                "or choose another output_dir"
            )
        set_seed(config.train.seed)
        model, self.tokenizer = build_reward_model(config.model)
        self.fmt = sequence_format(self.tokenizer, model.spec.architecture)
        data = prepare_run_data(config.data, self.tokenizer, self.fmt, config.train.seed)
        self.train_data, self.eval_data = data.train, data.evals
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config.save_yaml(self.run_dir / "config.yaml")
            for message in data.messages:
                self.print(message)
        self._check_labels()
        self.loss_fn = build_task_loss(
            config.data.task, score_loss=config.data.score_loss, margin=config.data.margin
        )
        optimizer = self._build_optimizer(model)
        self.steps_per_epoch = math.ceil(
            self._batches_per_rank() / config.train.gradient_accumulation_steps
        )
        self.total_steps = config.train.max_steps or self.steps_per_epoch * config.train.num_epochs
        warmup = config.train.warmup_steps or round(config.train.warmup_ratio * self.total_steps)
        self.scheduler = get_scheduler(
            SCHEDULERS[config.train.lr_scheduler],
            optimizer,
            num_warmup_steps=warmup,
            num_training_steps=self.total_steps,
        )
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        self.state = ckpt.TrainerState()
        self.logger = (
            RunLogger(self.run_dir, config.train.report_to, config.to_dict())
            if self.is_main
            else None
        )
        if config.resume:
            self._resume()

    def _check_labels(self) -> None:
        data = self.config.data
        if data.task != "score" or data.score_loss != "cross_entropy":
            return
        classes = self.config.model.num_labels
        for index, example in enumerate(self.train_data.examples):
            label = example.label
            if label is None or not label.is_integer() or not 0 <= label < classes:
                raise DataError(
                    f"label {label} is not a class index in 0..{classes - 1} "
                    "(set model.num_labels to the number of classes)",
                    file=", ".join(data.train_files),
                    record=index,
                    field="label",
                )

    def _build_optimizer(self, model: RewardModel) -> torch.optim.Optimizer:
        train = self.config.train
        decay, no_decay = [], []
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                (no_decay if any(key in name for key in NO_DECAY) else decay).append(parameter)
        return torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": train.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=train.learning_rate,
            betas=(train.adam_beta1, train.adam_beta2),
            eps=train.adam_epsilon,
        )

    def _batches_per_rank(self) -> int:
        n_batches = math.ceil(len(self.train_data) / self.config.train.batch_size)
        if n_batches < self.world:
            raise DataError(
                f"{len(self.train_data)} training examples make {n_batches} batches, fewer than "
                f"the {self.world} processes"
            )
        return n_batches // self.world

    def _epoch_windows(self, epoch: int) -> list[list[list[int]]]:
        """This rank's batches of `epoch`, grouped into optimizer steps."""
        train = self.config.train
        batches = plan_batches(
            self.train_data.lengths,
            train.batch_size,
            shuffle=True,
            seed=train.seed,
            epoch=epoch,
            group_by_length=self.config.data.group_by_length,
        )
        mine = batches[self.rank :: self.world][: self._batches_per_rank()]
        k = train.gradient_accumulation_steps
        return [mine[i : i + k] for i in range(0, len(mine), k)]

    def _resume(self) -> None:
        folder = ckpt.latest_valid_checkpoint(self.run_dir, log=self.print)
        if folder is None:
            self.print(f"--resume: no complete checkpoint in {self.run_dir}; starting afresh")
            return
        self.accelerator.unwrap_model(self.model).load_trained_weights(folder / "model")
        self.optimizer.load_state_dict(ckpt.torch_load(folder / "optimizer.pt"))
        self.scheduler.load_state_dict(ckpt.torch_load(folder / "scheduler.pt"))
        ckpt.set_rng_state(ckpt.torch_load(folder / f"rng_rank{self.rank}.pt"))
        self.state = ckpt.load_state(folder)
        if self.logger is not None:
            self.logger.truncate_after(self.state.global_step)
        self.print(f"resumed from {folder} at step {self.state.global_step}")

    # ------------------------------------------------------------------ train
    def train(self) -> dict[str, Any]:
        train = self.config.train
        state = self.state
        progress = tqdm(
            total=self.total_steps,
            initial=state.global_step,
            disable=not (self.is_main and train.progress_bar),
            desc="train",
            dynamic_ncols=True,
        )
        train_seconds = 0.0
        train_examples = 0
        window_stats: list[dict[str, float]] = []
        last_eval: dict[str, dict[str, float]] = {}
        last_eval_step = last_save_step = -1
        while state.global_step < self.total_steps:
            windows = self._epoch_windows(state.epoch)
            first = state.batches_done_in_epoch // train.gradient_accumulation_steps
            for window in windows[first:]:
                started = time.perf_counter()
                stats = self._optimizer_step(window)
                train_seconds += time.perf_counter() - started
                n_examples = sum(len(batch) for batch in window) * self.world
                train_examples += n_examples
                state.global_step += 1
                state.batches_done_in_epoch += len(window)
                state.examples_seen += n_examples
                window_stats.append(stats)
                progress.update(1)
                progress.set_postfix(
                    loss=f"{stats['loss']:.4f}",
                    acc=f"{stats['accuracy']:.3f}",
                    pairs_s=f"{train_examples / max(train_seconds, 1e-9):.1f}",
                )
                step = state.global_step
                if step % train.logging_steps == 0 or step == self.total_steps:
                    self._log_train(window_stats, train_examples / max(train_seconds, 1e-9))
                    window_stats = []
                if train.eval_steps and step % train.eval_steps == 0:
                    last_eval, last_eval_step = self._evaluate(), step
                if train.save_steps and step % train.save_steps == 0:
                    self._save_checkpoint()
                    last_save_step = step
                if step >= self.total_steps:
                    break
            else:
                state.epoch += 1
                state.batches_done_in_epoch = 0
                if last_eval_step != state.global_step:
                    last_eval, last_eval_step = self._evaluate(), state.global_step
                if last_save_step != state.global_step:
                    self._save_checkpoint()
                    last_save_step = state.global_step
        progress.close()
        if last_eval_step != state.global_step:
            last_eval = self._evaluate()
        if last_save_step != state.global_step:
            self._save_checkpoint()
        throughput = train_examples / train_seconds if train_seconds else float("nan")
        return self._finish(last_eval, throughput)

    def _task_loss(self, rewards: torch.Tensor, batch: dict[str, torch.Tensor], size: int):
        """(mean loss, accuracy) of one micro-batch of `size` examples."""
        task = self.config.data.task
        if task == "score":
            labels = batch["labels"]
            loss = self.loss_fn(rewards, labels)
            if rewards.dim() == 2:
                accuracy = (rewards.argmax(-1) == labels.long()).float().mean()
            else:
                accuracy = torch.tensor(float("nan"))
            return loss, accuracy
        grouped = rewards.reshape(-1, size).T  # [B, C], column 0 is the preferred response
        if task == "preference":
            loss = self.loss_fn(grouped[:, 0], grouped[:, 1])
        else:
            loss = self.loss_fn(grouped)
        accuracy = (grouped[:, :1] > grouped[:, 1:]).all(dim=1).float().mean()
        return loss, accuracy

    def _optimizer_step(self, window: list[list[int]]) -> dict[str, float]:
        """Accumulate the gradients of one optimizer step's micro-batches, then step."""
        stats = self._accumulate_gradients(window)
        stats["grad_norm"] = self._apply_update()
        return stats

    def _accumulate_gradients(self, window: list[list[int]]) -> dict[str, float]:
        """Forward and backward over the micro-batches of one optimizer step.

        Each micro-batch's mean loss is weighted by its share of the window's examples, so the
        gradient is that of the mean loss over every example of the step whatever the sizes.
        """
        self.model.train()
        device = self.accelerator.device
        total = sum(len(batch) for batch in window)
        loss_sum = correct_sum = 0.0
        for index, indices in enumerate(window):
            batch = collate(
                [self.train_data.examples[i] for i in indices],
                self.fmt,
                self.config.model.padding_side,
            )
            batch = {k: v.to(device) for k, v in batch.items()}
            sync = index == len(window) - 1
            context = contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model)
            with context:
                rewards = self.model(**model_inputs(batch)).rewards
                loss, accuracy = self._task_loss(rewards, batch, len(indices))
                self.accelerator.backward(loss * (len(indices) / total))
            loss_sum += loss.item() * len(indices)
            correct_sum += accuracy.item() * len(indices)
        if not math.isfinite(loss_sum):
            raise FloatingPointError(
                f"training loss became {loss_sum} at step {self.state.global_step + 1}; "
                "the last checkpoint is intact (lower the learning rate, or check the data)"
            )
        return {"loss": loss_sum / total, "accuracy": correct_sum / total}

    def _apply_update(self) -> float:
        """Clip, step the optimizer and the schedule, clear the gradients; the gradient norm."""
        grad_norm = float("nan")
        if self.config.train.max_grad_norm is not None:
            grad_norm = float(
                self.accelerator.clip_grad_norm_(
                    self.model.parameters(), self.config.train.max_grad_norm
                )
            )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def _log_train(self, window_stats: list[dict[str, float]], throughput: float) -> None:
        if self.logger is None or not window_stats:
            return
        row: dict[str, Any] = {"step": self.state.global_step, "split": "train"}
        for key in window_stats[0]:
            row[key] = sum(s[key] for s in window_stats) / len(window_stats)
        row["learning_rate"] = self.scheduler.get_last_lr()[0]
        row["pairs_per_second"] = throughput
        row["epoch"] = self.state.epoch + self.state.batches_done_in_epoch / max(
            1, self._batches_per_rank()
        )
        self.logger.log(row, "train")

    def _evaluate(self) -> dict[str, dict[str, float]]:
        """Metrics on every evaluation set (main process only; others wait at the next step)."""
        if not self.is_main or not self.eval_data:
            return {}
        model = self.accelerator.unwrap_model(self.model)
        results = {}
        for name, data in self.eval_data.items():
            metrics = evaluate(
                model,
                data,
                self.fmt,
                self.config.data.task,
                batch_size=self.config.train.eval_batch_size,
                padding_side=self.config.model.padding_side,
                device=self.accelerator.device,
                score_loss=self.config.data.score_loss,
            )
            results[name] = metrics
            row = {"step": self.state.global_step, "split": name, **metrics}
            self.logger.log(row, f"eval/{name}")  # type: ignore[union-attr]
            shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
            self.print(f"step {self.state.global_step} eval '{name}': {shown}")
        return results

    # ------------------------------------------------------------------ save
    def _save_checkpoint(self) -> None:
        accelerator = self.accelerator
        staging = ckpt.staging_dir(self.run_dir, self.state.global_step)
        if self.is_main:
            ckpt.make_empty(staging)
        accelerator.wait_for_everyone()
        torch.save(ckpt.rng_state(), staging / f"rng_rank{self.rank}.pt")
        accelerator.wait_for_everyone()
        if self.is_main:
            model = accelerator.unwrap_model(self.model)
            model.save_pretrained(staging / "model", self.tokenizer)
            torch.save(self.optimizer.state_dict(), staging / "optimizer.pt")
            torch.save(self.scheduler.state_dict(), staging / "scheduler.pt")
            self.config.save_yaml(staging / "config.yaml")
            ckpt.commit_checkpoint(staging, self.state, self.config.train.save_total_limit)
        accelerator.wait_for_everyone()

    def _finish(self, last_eval: dict[str, dict[str, float]], throughput: float) -> dict[str, Any]:
        final: dict[str, Any] = {}
        if self.is_main:
            model = self.accelerator.unwrap_model(self.model)
            model.save_pretrained(self.run_dir / "final", self.tokenizer)
            final = {
                "global_step": self.state.global_step,
                "epochs": self.state.epoch
                + self.state.batches_done_in_epoch / max(1, self._batches_per_rank()),
                "eval": last_eval,
                "train_examples": len(self.train_data),
                "train_pairs_per_second": throughput,
                "peak_memory_mb": peak_memory_mb(),
                "world_size": self.world,
            }
            (self.run_dir / "final_metrics.json").write_text(json.dumps(final, indent=2) + "\n")
            self.print(f"final model: {self.run_dir / 'final'}")
        self.accelerator.wait_for_everyone()
        return final

    def cleanup(self) -> None:
        if self.logger is not None:
            self.logger.close()
        self.accelerator.end_training()


def peak_memory_mb() -> float:
    """Peak memory of this process: GPU memory allocated on CUDA, resident set size on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(config: RunConfig, log=print) -> dict[str, Any]:
    """Train a reward model as `config` says; returns the final metrics."""
    run = TrainingRun(config, log=log)
    run.setup()
    try:
        return run.train()
    finally:
        run.cleanup()
