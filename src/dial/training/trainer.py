"""The training recipe: setup -> train -> save -> cleanup, readable top to bottom.

Methods (``train.method``):

| method | loss | target data |
|---|---|---|
| ``source_only`` | task loss on source | none (used for domain metrics if given) |
| ``dial`` | task loss on source + λ·domain loss(source embeddings, target embeddings) | texts |
| ``oracle`` | task loss on source + task loss on the labelled target | labelled |
| ``source_sft`` | task loss + next-token NLL on the source's preferred responses | none |
| ``target_ntp`` | task loss + next-token NLL on the target texts | texts |

Runs in one process or under ``accelerate launch`` (DDP on GPUs, gloo on CPUs). Each process
takes every world-size-th (source, target) batch pair of the epoch's order (a pure function of
seed and epoch), so a resumed run replays exactly what an uninterrupted run would have seen.
The critic of an adversarial domain loss is trained beside the model by its own optimizer, its
gradients averaged over the processes, so every rank holds the same critic.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import math
import resource
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import get_scheduler

from dial.config import DomainConfig, RunConfig
from dial.data.datasets import prepare_run_data
from dial.data.pairing import plan_paired_epoch
from dial.data.tokenize import EncodedData, collate, model_inputs, plan_batches, sequence_format
from dial.errors import ConfigError, DataError, RunAborted
from dial.evaluation.domain_metrics import domain_classifier_accuracy
from dial.evaluation.evaluate import evaluate, predict
from dial.models.reward_model import RewardModel, build_reward_model
from dial.objectives.domain_losses import DomainLoss, build_domain_loss, lambda_at
from dial.objectives.task_losses import build_task_loss
from dial.training import checkpoint as ckpt
from dial.training.distributed import GradientAveragingOptimizer, average_gradients
from dial.training.logging import RunLogger

SCHEDULERS = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
NO_DECAY = ("bias", "norm", "LayerNorm", "layernorm")
LM_METHODS = ("source_sft", "target_ntp")
PAIRED_METHODS = ("dial", "oracle", "target_ntp")
# |Ŵ| beyond this many times the mean source-target distance: the critic is far from
# 1-Lipschitz, so Ŵ no longer estimates a Wasserstein distance (see TrainingRun._check_critic).
CRITIC_DIVERGENCE_RATIO = 10.0


def domain_loss_options(domain: DomainConfig) -> dict[str, Any]:
    """The options of `domain.loss` taken from the domain config."""
    network = {
        "widths": tuple(domain.critic_widths),
        "activation": domain.critic_activation,
        "dropout": domain.critic_dropout,
    }
    return {
        "wdgrl": {**network, "gamma": domain.gamma, "critic_iter": domain.critic_iter},
        "dann": {**network, "alpha": domain.dann_alpha},
        "mmd": {
            "kernel_num": domain.mmd_kernel_num,
            "kernel_mul": domain.mmd_kernel_mul,
            "bandwidth": domain.mmd_bandwidth,
        },
        "coral": {},
    }[domain.loss]


class TrainingRun:
    """One training run of a reward model (any method of the module docstring's table)."""

    def __init__(self, config: RunConfig, log=print) -> None:
        self.config = config
        self.print = log
        self.run_dir = Path(config.output_dir)

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        config = self.config
        # a rank that died or hangs ends the others' waits at the next collective operation
        timeout = timedelta(seconds=config.train.collective_timeout_s)
        self.accelerator = Accelerator(
            cpu=not torch.cuda.is_available(),
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)],
        )
        self.is_main = self.accelerator.is_main_process
        self.world = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        existing = ckpt.list_checkpoints(self.run_dir)
        if existing and not config.resume:
            raise ConfigError(
                f"{self.run_dir} already holds checkpoints: pass --resume to continue that run, "
                "or choose another output_dir"
            )
        self.method = config.train.method
        if self.method in PAIRED_METHODS and not config.data.target_files:
            raise ConfigError(f"method {self.method} needs target data (data.target_files)")
        set_seed(config.train.seed)
        model, self.tokenizer = build_reward_model(config.model, lm_head=self.method in LM_METHODS)
        model.check_embedding_layer(config.domain.embedding_layer, "domain.embedding_layer")
        if config.model.init_from is not None:
            model.init_from(config.model.init_from)
        self.fmt = sequence_format(self.tokenizer, model.spec.architecture)
        data = prepare_run_data(
            config.data,
            self.tokenizer,
            self.fmt,
            config.train.seed,
            target_labels=self.method == "oracle",
            num_labels=config.model.num_labels,
        )
        self.train_data, self.eval_data, self.target_data = data.train, data.evals, data.target
        self.domain_loss: DomainLoss | None = None
        self.critic_warned = False
        self.critic_optimizer: GradientAveragingOptimizer | None = None
        if self.method == "dial":
            self.domain_loss = build_domain_loss(
                config.domain.loss, model.hidden_size, **domain_loss_options(config.domain)
            ).to(self.accelerator.device)
            if self.domain_loss.adversarial:
                critic_optimizer = torch.optim.Adam(
                    self.domain_loss.critic_parameters(),
                    lr=config.domain.critic_lr,
                    weight_decay=config.domain.critic_weight_decay,
                )
                self.critic_optimizer = GradientAveragingOptimizer(
                    critic_optimizer, self.accelerator
                )
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config.save_yaml(self.run_dir / "config.yaml")
            for message in data.messages:
                self.print(message)
        self.loss_fn = build_task_loss(
            config.data.task, score_loss=config.data.score_loss, margin=config.data.margin
        )
        self.joint_domain_parameters = self._joint_domain_parameters()
        optimizer = self._build_optimizer(model)
        self.steps_per_epoch = math.ceil(
            self._pairs_per_rank() / config.train.gradient_accumulation_steps
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

    def _joint_domain_parameters(self) -> list[torch.nn.Parameter]:
        """Domain-loss parameters trained with the model (DANN's classifier), not a critic."""
        if self.domain_loss is None:
            return []
        critic = {id(p) for p in self.domain_loss.critic_parameters()}
        return [p for p in self.domain_loss.parameters() if id(p) not in critic]

    def _build_optimizer(self, model: RewardModel) -> torch.optim.Optimizer:
        train = self.config.train
        decay, no_decay = [], []
        named = list(model.named_parameters())
        named += [(f"domain_loss.{i}", p) for i, p in enumerate(self.joint_domain_parameters)]
        for name, parameter in named:
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

    def _pairs_per_epoch(self) -> int:
        """(source batch, target batch) pairs in an epoch; the target is None unpaired."""
        source = math.ceil(len(self.train_data) / self.config.train.batch_size)
        if self.method not in PAIRED_METHODS:
            return source
        target = math.ceil(len(self.target_data) / self._target_batch_size())
        return (
            min(source, target) if self.config.data.pairing == "truncate" else max(source, target)
        )

    def _length_group(self) -> int:
        data = self.config.data
        return data.length_group_batches if data.group_by_length else 0

    def _target_batch_size(self) -> int:
        return self.config.data.target_batch_size or self.config.train.batch_size

    def _pairs_per_rank(self) -> int:
        pairs = self._pairs_per_epoch()
        if pairs < self.world:
            raise DataError(
                f"an epoch has {pairs} batches, fewer than the {self.world} processes "
                "(lower train.batch_size or add data)"
            )
        return pairs // self.world

    def _epoch_windows(self, epoch: int) -> list[list[tuple[list[int], list[int] | None]]]:
        """This rank's (source batch, target batch) pairs of `epoch`, grouped into steps."""
        train, data = self.config.train, self.config.data
        if self.method in PAIRED_METHODS:
            pairs: list[tuple[list[int], list[int] | None]] = list(
                plan_paired_epoch(
                    self.train_data.lengths,
                    self.target_data.lengths,
                    train.batch_size,
                    self._target_batch_size(),
                    pairing=data.pairing,
                    seed=train.seed,
                    epoch=epoch,
                    shuffle_target=data.shuffle_target,
                    length_group=self._length_group(),
                )
            )
        else:
            batches = plan_batches(
                self.train_data.lengths,
                train.batch_size,
                shuffle=True,
                seed=train.seed,
                epoch=epoch,
                length_group=self._length_group(),
            )
            pairs = [(batch, None) for batch in batches]
        mine = pairs[self.rank :: self.world][: self._pairs_per_rank()]
        k = train.gradient_accumulation_steps
        return [mine[i : i + k] for i in range(0, len(mine), k)]

    def _resume(self) -> None:
        folder = ckpt.latest_valid_checkpoint(self.run_dir, log=self.print)
        if folder is None:
            self.print(f"--resume: no complete checkpoint in {self.run_dir}; starting afresh")
            if self.logger is not None:
                self.logger.truncate_after(0)  # rows of the run that stopped before saving
            return
        self.accelerator.unwrap_model(self.model).load_trained_weights(folder / "model")
        self.optimizer.load_state_dict(ckpt.torch_load(folder / "optimizer.pt"))
        self.scheduler.load_state_dict(ckpt.torch_load(folder / "scheduler.pt"))
        if self.domain_loss is not None:
            self.domain_loss.load_state_dict(load_file(str(folder / "domain_loss.safetensors")))
        if self.critic_optimizer is not None:
            self.critic_optimizer.load_state_dict(ckpt.torch_load(folder / "critic_optimizer.pt"))
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
        last_eval: dict[str, dict[str, float]] = {}
        # A checkpoint is written after every evaluation of its step: a resumed run has done both.
        last_eval_step = last_save_step = state.global_step or -1
        while state.global_step < self.total_steps:
            windows = self._epoch_windows(state.epoch)
            first = state.batches_done_in_epoch // train.gradient_accumulation_steps
            for window in windows[first:]:
                started = time.perf_counter()
                stats = self._optimizer_step(window)
                train_seconds += time.perf_counter() - started
                n_examples = sum(len(source) for source, _ in window) * self.world
                train_examples += n_examples
                state.global_step += 1
                state.batches_done_in_epoch += len(window)
                state.examples_seen += n_examples
                state.log_window.append(stats)
                progress.update(1)
                shown = {"loss": f"{stats['loss']:.4f}", "acc": f"{stats['accuracy']:.3f}"}
                if "wasserstein" in stats:
                    shown["W"] = f"{stats['wasserstein']:.3f}"
                shown["pairs_s"] = f"{train_examples / max(train_seconds, 1e-9):.1f}"
                progress.set_postfix(shown)
                step = state.global_step
                if step % train.logging_steps == 0 or step == self.total_steps:
                    self._log_train(state.log_window, train_examples / max(train_seconds, 1e-9))
                    state.log_window = []
                mid_epoch = window is not windows[-1]  # an epoch's end evaluates and saves below
                if mid_epoch and train.eval_steps and step % train.eval_steps == 0:
                    last_eval, last_eval_step = self._evaluate(), step
                if mid_epoch and train.save_steps and step % train.save_steps == 0:
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
        elif not last_eval:  # resumed from the last step's checkpoint: its metrics once more
            last_eval = self._evaluate(log=False)
        if last_save_step != state.global_step:
            self._save_checkpoint()
        throughput = train_examples / train_seconds if train_seconds else float("nan")
        return self._finish(last_eval, throughput)

    def _task_loss(
        self, rewards: torch.Tensor, batch: dict[str, torch.Tensor], size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
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

    def _batch(self, data: EncodedData, indices: list[int]) -> dict[str, torch.Tensor]:
        batch = collate(
            [data.examples[i] for i in indices], self.fmt, self.config.model.padding_side
        )
        return {k: v.to(self.accelerator.device) for k, v in batch.items()}

    def _lm_labels(self, batch: dict[str, torch.Tensor], size: int) -> torch.Tensor:
        """Next-token targets: source_sft the preferred response of each example (prompt masked),
        target_ntp every token of the target texts; -100 elsewhere."""
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        if self.method == "source_sft":
            labels = labels.masked_fill(batch["response_mask"] == 0, -100)
            labels[size:] = -100  # rows past the first B hold the other responses
        return labels

    def _optimizer_step(self, window: list[tuple[list[int], list[int] | None]]) -> dict[str, float]:
        """Accumulate the gradients of one optimizer step's micro-batches, then step."""
        stats = self._accumulate_gradients(window)
        stats["grad_norm"] = self._apply_update()
        return stats

    def _accumulate_gradients(
        self, window: list[tuple[list[int], list[int] | None]]
    ) -> dict[str, float]:
        """Forward and backward over the micro-batches of one optimizer step.

        Each micro-batch's loss is weighted by its share of the window's source examples, so
        the gradient is that of the mean loss over every example of the step whatever the
        sizes. Returns the window's statistics, each a mean weighted the same way.
        """
        self.model.train()
        total = sum(len(source) for source, _ in window)
        sums: dict[str, float] = {}
        for index, (source, target) in enumerate(window):
            share = len(source) / total
            sync = index == len(window) - 1
            context = contextlib.nullcontext() if sync else self.accelerator.no_sync(self.model)
            with context:
                loss, stats = self._micro_batch_loss(source, target)
                self.accelerator.backward(loss * share)
            for key, value in stats.items():
                sums[key] = sums.get(key, 0.0) + value * share
        for key, value in sums.items():
            if key.startswith("critic_") and not math.isfinite(value):
                raise self._stop(
                    f"the critic diverged: {key} became {value}",
                    "lower domain.critic_lr, or raise domain.gamma",
                )
        if not math.isfinite(sums["loss"]):
            raise self._stop(
                f"the training loss became {sums['loss']}",
                "lower train.learning_rate, or check the data",
            )
        return sums

    def _stop(self, what: str, advice: str) -> FloatingPointError:
        """The error that ends a run whose numbers stopped being finite, raised before the
        optimizer step could write them into the weights."""
        saved = ckpt.list_checkpoints(self.run_dir)
        last = "no checkpoint was written yet"
        if saved:
            last = f"the last good state is {saved[-1]} (--resume continues from it)"
        return FloatingPointError(
            f"{what} at step {self.state.global_step + 1}; stopped before updating the "
            f"weights: {last}. To avoid it: {advice}"
        )

    def _micro_batch_loss(
        self, source: list[int], target: list[int] | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The method's loss on one (source, target) micro-batch pair, and its statistics."""
        aux_weight = self.config.train.aux_weight
        batch = self._batch(self.train_data, source)
        lm_labels = self._lm_labels(batch, len(source)) if self.method == "source_sft" else None
        layer = self.config.domain.embedding_layer if self.domain_loss is not None else None
        output = self.model(**model_inputs(batch), lm_labels=lm_labels, embedding_layer=layer)
        loss, accuracy = self._task_loss(output.rewards, batch, len(source))
        stats = {"task_loss": loss.item(), "accuracy": accuracy.item()}
        if output.lm_loss is not None:
            loss = loss + aux_weight * output.lm_loss
            stats["lm_loss"] = output.lm_loss.item()
        if target is not None:
            target_batch = self._batch(self.target_data, target)
            target_labels = (
                self._lm_labels(target_batch, len(target)) if self.method == "target_ntp" else None
            )
            target_output = self.model(
                **model_inputs(target_batch), lm_labels=target_labels, embedding_layer=layer
            )
            if self.method == "oracle":
                target_loss, target_accuracy = self._task_loss(
                    target_output.rewards, target_batch, len(target)
                )
                loss = loss + target_loss
                stats["target_task_loss"] = target_loss.item()
                stats["target_accuracy"] = target_accuracy.item()
            if target_output.lm_loss is not None:
                loss = loss + aux_weight * target_output.lm_loss
                stats["lm_loss"] = target_output.lm_loss.item()
            if self.domain_loss is not None:
                loss = loss + self._domain_term(output.embeddings, target_output.embeddings, stats)
        stats["loss"] = loss.item()
        return loss, stats

    def _domain_term(
        self, source: torch.Tensor, target: torch.Tensor, stats: dict[str, float]
    ) -> torch.Tensor:
        """λ·domain loss, after the critic's steps on the detached embeddings."""
        assert self.domain_loss is not None
        domain = self.config.domain
        if self.critic_optimizer is not None:
            critic_stats = self.domain_loss.critic_step(source, target, self.critic_optimizer)
            stats.update(
                {f"critic_{k.removeprefix('critic_')}": v for k, v in critic_stats.items()}
            )
        weight = lambda_at(
            self.state.global_step,
            self.total_steps,
            value=domain.weight,
            schedule=domain.weight_schedule,
            ramp_steps=domain.ramp_steps,
        )
        output = self.domain_loss(source, target)
        stats.update(output.stats)
        if self.critic_optimizer is not None:
            self._check_critic(stats["wasserstein"], source, target)
        stats["domain_weight"] = weight
        return weight * output.loss

    def _check_critic(self, wasserstein: float, source: torch.Tensor, target: torch.Tensor) -> None:
        r"""Report (once) a critic that is diverging while its estimate is still finite.

        For a 1-Lipschitz critic :math:`f`,
        :math:`|\hat W| = |\frac{1}{N_s N_t}\sum_{i,j} f(s_i) - f(t_j)|
        \le \frac{1}{N_s N_t}\sum_{i,j} \lVert s_i - t_j \rVert = D`.
        The gradient penalty keeps :math:`f` near 1-Lipschitz, so :math:`|\hat W|` beyond
        ``CRITIC_DIVERGENCE_RATIO``·D means the critic has escaped it.
        """
        if self.critic_warned or not math.isfinite(wasserstein):
            return
        with torch.no_grad():
            distance = torch.cdist(source.detach().float(), target.detach().float()).mean().item()
        if abs(wasserstein) <= CRITIC_DIVERGENCE_RATIO * distance:
            return
        self.critic_warned = True
        if self.is_main:
            self.print(
                f"warning: step {self.state.global_step + 1}: the critic is diverging: its "
                f"estimate Ŵ = {wasserstein:.4g} is {abs(wasserstein) / max(distance, 1e-12):.0f} "
                f"times the mean source-target distance {distance:.4g}, which bounds a "
                "1-Lipschitz critic; Ŵ no longer estimates the Wasserstein distance (raise "
                "domain.gamma, or lower domain.critic_lr)"
            )

    def _apply_update(self) -> float:
        """Clip, step the optimizer and the schedule, clear the gradients; the gradient norm.

        A non-finite gradient norm stops the run before the step (see :meth:`_stop`)."""
        average_gradients(self.accelerator, self.joint_domain_parameters)
        grad_norm = float("nan")
        if self.config.train.max_grad_norm is not None:
            grad_norm = float(
                self.accelerator.clip_grad_norm_(
                    self.model.parameters(), self.config.train.max_grad_norm
                )
            )
            if not math.isfinite(grad_norm):
                raise self._stop(
                    f"the gradient norm became {grad_norm}",
                    "lower train.learning_rate, or check the data",
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
        row["epoch"] = self._epochs_done()
        self.logger.log(row, "train")

    def _epochs_done(self) -> float:
        return self.state.epoch + self.state.batches_done_in_epoch / self._pairs_per_rank()

    def _evaluate(self, log: bool = True) -> dict[str, dict[str, float]]:
        """Metrics on every evaluation set, and how far apart the domains' embeddings are
        (main process only; the others wait at the next step); `log`: also log and print them."""
        if not self.is_main:
            return {}
        release_free_memory()
        model = self.accelerator.unwrap_model(self.model)
        results = {}
        for name, eval_set in self.eval_data.items():
            results[name] = evaluate(
                model,
                eval_set.data,
                self.fmt,
                eval_set.task,
                batch_size=self.config.train.eval_batch_size,
                padding_side=self.config.model.padding_side,
                device=self.accelerator.device,
                score_loss=self.config.data.score_loss,
            )
        if self.target_data is not None:
            results["domain"] = self._domain_metrics(model)
        for name, metrics in results.items() if log else ():
            self.logger.log(
                {"step": self.state.global_step, "split": name, **metrics}, f"eval/{name}"
            )  # type: ignore[union-attr]
            shown = {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}
            self.print(f"step {self.state.global_step} eval '{name}': {shown}")
        return results

    def _domain_metrics(self, model: RewardModel) -> dict[str, float]:
        """A fresh domain classifier's held-out accuracy on source and target embeddings (and
        the critic's Ŵ), on a fixed sample of each domain's training texts."""
        samples = self.config.domain.eval_samples
        embeddings = []
        for data in (self.train_data, self.target_data):
            subset = EncodedData(data.examples[:samples], 0, 0, data.max_length)
            predictions = predict(
                model,
                subset,
                self.fmt,
                batch_size=self.config.train.eval_batch_size,
                padding_side=self.config.model.padding_side,
                device=self.accelerator.device,
                with_embeddings=True,
                embedding_layer=self.config.domain.embedding_layer,
            )
            embeddings.append(predictions.embeddings.reshape(-1, model.hidden_size))
        source, target = embeddings
        metrics = {
            "domain_classifier_accuracy": domain_classifier_accuracy(
                source, target, seed=self.config.train.seed
            )
        }
        if self.domain_loss is not None and self.domain_loss.adversarial:
            with torch.no_grad():
                device = self.accelerator.device
                estimate = self.domain_loss.wasserstein(
                    torch.as_tensor(source, device=device), torch.as_tensor(target, device=device)
                )
            metrics["critic_wasserstein"] = estimate.item()
        return metrics

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
            if self.domain_loss is not None:
                state = {k: v.contiguous() for k, v in self.domain_loss.state_dict().items()}
                save_file(state, str(staging / "domain_loss.safetensors"))
            if self.critic_optimizer is not None:
                torch.save(self.critic_optimizer.state_dict(), staging / "critic_optimizer.pt")
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
                "epochs": self._epochs_done(),
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


def release_free_memory() -> None:
    """Give memory that training freed back to the system: CUDA's cached blocks, or on Linux
    the free heap pages the C allocator keeps (an evaluation's batches, shaped unlike the
    training batches, would otherwise be laid on top of them and raise the peak)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_memory_mb() -> float:
    """Peak memory of this process: GPU memory allocated on CUDA, resident set size on CPU."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def collective_failure(exc: BaseException) -> bool:
    """Whether `exc` is a failed collective operation (gloo or NCCL): a peer died or hangs."""
    return isinstance(exc, torch.distributed.DistError) or any(
        name in str(exc) for name in ("gloo", "NCCL")
    )


def train(config: RunConfig, log=print) -> dict[str, Any]:
    """Train a reward model as `config` says; returns the final metrics.

    Raises:
        RunAborted: in a run of several processes, another process died or stopped answering
            (within ``train.collective_timeout_s``).
    """
    run = TrainingRun(config, log=log)
    run.setup()
    try:
        return run.train()
    except RuntimeError as exc:
        if run.world == 1 or not collective_failure(exc):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunAborted(
            f"process {run.rank} of {run.world} stopped at step {run.state.global_step + 1}: "
            "another process died or did not answer within train.collective_timeout_s "
            f"({config.train.collective_timeout_s} s); {reason}. The newest complete checkpoint "
            "is intact: --resume continues from it"
        ) from exc
    finally:
        run.cleanup()
