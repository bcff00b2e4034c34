"""The training loop, shared by pretraining and post-pretraining.

One process on CPU or a GPU, or many under torchrun (DDP), with no code change. AdamW (the
fused kernel by default); lr from the schedule at every step; gradient accumulation up to the
global batch; optional clipping; bf16 autocast where the device computes bf16 natively;
activation checkpointing and torch.compile as options; on a CPU, the compute threads leave
the loader workers their cores. Checkpoints every N steps and at each epoch end; resuming
restores model, optimiser, RNG states and the data position, so an interrupted run continues
exactly. Metrics go to dvclive.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from tvts.config import TrainingConfig
from tvts.data.transforms import batch_to
from tvts.errors import UserError
from tvts.train.checkpoint import (
    CheckpointManager,
    load_checkpoint,
    rng_state,
    seed_rank,
    set_rng_state,
)
from tvts.train.cpu import native_bf16, thread_budget
from tvts.train.distributed import Dist, all_mean
from tvts.train.live_log import rewind
from tvts.train.optim import adamw
from tvts.train.sampler import ResumableSampler
from tvts.train.schedule import lr_at

log = logging.getLogger(__name__)


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast: `bf16` always; `auto` on a GPU and on a CPU with bf16 instructions."""
    if precision == "auto":
        return device.type == "cuda" or (device.type == "cpu" and native_bf16())
    return precision == "bf16"


class Task(Protocol):
    def loss(self, model: nn.Module, batch: dict[str, Any], world: int) -> dict[str, torch.Tensor]:
        """Loss parts for logging; "loss_backward", when given, is what is back-propagated
        (else "loss")."""
        ...

    def validate(self, model: nn.Module, loader: DataLoader, device: torch.device
                 ) -> dict[str, float]:
        ...

    # optional: `leaves_parameters_unused(model) -> bool`, whether a step may leave some of
    # the model's parameters without a gradient (DDP's find_unused_parameters); default yes


@dataclass
class FitResult:
    steps: int
    epochs_done: int
    last_metrics: dict[str, float]
    val_history: list[dict[str, float]]
    stopped_early: bool


class Trainer:
    def __init__(self, model: nn.Module, task: Task, cfg: TrainingConfig, train_set: Dataset,
                 val_set: Dataset | None, collate: Callable, out_dir: str | Path, d: Dist,
                 seed: int, model_config: dict[str, Any], monitor: str, mode: str,
                 clips_per_item: int = 1, live_dir: str | Path | None = None,
                 shuffle: bool = True, param_groups: list[dict[str, Any]] | None = None):
        """`param_groups`: optimiser groups (default: every parameter in one); a group's
        `lr_scale` multiplies the scheduled lr (layer-wise decay)."""
        self.cfg, self.task, self.d, self.seed = cfg, task, d, seed
        self.out = Path(out_dir)
        self.collate = collate
        self.skipped: dict[str, str] = {}  # videos the loader could not sample, and why
        self.model = model.to(d.device)
        per_rank = cfg.batch_size // d.world
        micro = cfg.micro_batch or per_rank
        if cfg.batch_size % d.world or per_rank % micro or micro % clips_per_item:
            raise UserError(
                f"batch_size {cfg.batch_size} must split into {d.world} processes x micro_batch "
                f"{micro} x accumulation, and micro_batch into clips of {clips_per_item} "
                "(data.samples_per_decode)")
        self.accum = per_rank // micro
        self.micro = micro
        self.items_per_micro = micro // clips_per_item
        self.train_set, self.val_set = train_set, val_set
        self.sampler = ResumableSampler(len(train_set), self.items_per_micro, seed, d.rank,
                                        d.world, shuffle, steps_of=self.accum)
        if self.sampler.batches_per_epoch() < self.accum:
            raise UserError(f"{len(train_set)} training items cannot fill one batch of "
                            f"{cfg.batch_size} clips")
        self.steps_per_epoch = self.sampler.batches_per_epoch() // self.accum
        self.optimizer = adamw(param_groups or self.model.parameters(), cfg.lr,
                               cfg.weight_decay, d.device, cfg.optimizer)
        self.autocast = use_bf16(cfg.precision, d.device)
        self.ckpt = CheckpointManager(self.out / "checkpoints", cfg.keep_checkpoints, monitor,
                                      mode, model_config)
        self.monitor, self.mode = monitor, mode
        self.model_config = model_config
        self.live_dir = live_dir
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        # every validation so far, with the step it followed (restored on resume)
        self.val_history: list[dict[str, float]] = []
        # the figures of the last step (and its epoch's validation), saved with each
        # checkpoint: a run resumed from its final checkpoint reports them again
        self.last_metrics: dict[str, float] = {}
        self._wrapped: nn.Module | None = None

    # ------------------------------------------------------------ setup
    def _wrap(self) -> nn.Module:
        model: nn.Module = self.model
        if self.cfg.compile:
            model = torch.compile(model)  # type: ignore[assignment]
        if self.d.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            model = DDP(model, device_ids=[self.d.local_rank] if self.d.device.type == "cuda"
                        else None, find_unused_parameters=self._may_leave_unused())
        return model

    def _may_leave_unused(self) -> bool:
        """Whether a step may leave parameters without a gradient (DDP must then look for
        them): the task knows what its loss uses; a task that does not say is assumed to."""
        says = getattr(self.task, "leaves_parameters_unused", None)
        return True if says is None else bool(says(self.model))

    def resume(self) -> bool:
        path = self.ckpt.latest
        if path is None or not path.exists():
            return False
        state = load_checkpoint(path, self.model_config)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        rngs = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
        if len(rngs) == self.d.world:  # each process its own stream, as saved
            set_rng_state(rngs[self.d.rank])
        else:
            log.warning("checkpoint %s holds the random states of %d process(es), this run has "
                        "%d: new streams are drawn, so the run continues, but not exactly as "
                        "an uninterrupted one", path, len(rngs), self.d.world)
            seed_rank(self.seed + int(state["step"]), self.d.rank)
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.batch_in_epoch = int(state["batch_in_epoch"])
        self.val_history = [dict(v) for v in state.get("val_history", [])]
        self.last_metrics = dict(state.get("last_metrics", {}))
        return True

    def _rng_states(self) -> list[dict[str, Any]]:
        """Every process's random state, in rank order (each restores its own on resume)."""
        if self.d.world == 1:
            return [rng_state()]
        states: list[Any] = [None] * self.d.world
        dist.all_gather_object(states, rng_state())
        return states

    def _state(self, rngs: list[dict[str, Any]]) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": rngs, "step": self.step, "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch, "val_history": self.val_history,
                "last_metrics": self.last_metrics}

    def _save(self, name: str, metric: float | None = None) -> None:
        rngs = self._rng_states()  # a collective: every rank takes part
        if self.d.main:
            self.ckpt.save(self._state(rngs), name, metric)
        if self.d.world > 1:
            dist.barrier()

    def _loader(self, dataset: Dataset, sampler) -> DataLoader:  # type: ignore[no-untyped-def]
        # its own generator: seeding the workers must not draw from the global RNG, or a
        # resumed run would see other dropout masks than an uninterrupted one
        gen = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        return DataLoader(dataset, batch_size=self.items_per_micro, sampler=sampler,
                          num_workers=self.cfg.loader_workers, collate_fn=self.collate,
                          pin_memory=self.d.device.type == "cuda", generator=gen,
                          persistent_workers=False, drop_last=False)

    # ------------------------------------------------------------ the loop
    def fit(self, max_steps: int | None = None) -> FitResult:
        if self.d.device.type != "cpu":
            return self._fit(max_steps)
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        with thread_budget(self.cfg.loader_workers, local):
            return self._fit(max_steps)

    def _fit(self, max_steps: int | None) -> FitResult:
        resumed = self.resume()
        if not resumed:
            seed_rank(self.seed, self.d.rank)
        elif self.d.main:  # a requeued job's log says where it went on from
            print(f"resumed from {self.ckpt.latest} (step {self.step})", file=sys.stderr,
                  flush=True)
        model = self._wrapped = self._wrap()
        live = None
        if self.d.main and self.live_dir is not None:
            from dvclive import Live

            live = Live(str(self.live_dir), resume=resumed, save_dvc_exp=False, dvcyaml=False)
            if resumed:  # rows logged after the checkpoint would be logged again
                rewind(self.live_dir, self.step - 1, self.val_history)
        total_steps = self.steps_per_epoch * self.cfg.epochs
        bar = tqdm(total=total_steps, initial=self.step, disable=not self.d.main,
                   desc="train", unit="step", dynamic_ncols=True)
        stopped = False
        try:
            while self.epoch < self.cfg.epochs:
                if hasattr(self.train_set, "set_epoch"):
                    self.train_set.set_epoch(self.epoch)
                self.sampler.set_epoch(self.epoch, self.batch_in_epoch)
                model.train()
                parts: dict[str, float] = {}
                wait = busy = 0.0
                clips = 0
                t_mark = time.perf_counter()
                micro_i = 0
                for batch in self._loader(self.train_set, self.sampler):
                    t_got = time.perf_counter()
                    wait += t_got - t_mark
                    self.skipped.update(dict(batch.get("skipped", [])))
                    batch = batch_to(batch, self.d.device)
                    sync = (micro_i + 1) % self.accum == 0
                    ctx = model.no_sync() if (self.d.world > 1 and not sync) else \
                        contextlib.nullcontext()
                    with ctx, torch.autocast(self.d.device.type, dtype=torch.bfloat16,
                                             enabled=self.autocast):
                        out = self.task.loss(model, batch, self.d.world)
                        (out.pop("loss_backward", out["loss"]) / self.accum).backward()
                    for k, v in out.items():
                        if v.ndim == 0:  # loss parts and accuracies, not the vectors
                            parts[k] = parts.get(k, 0.0) + float(v.detach()) / self.accum
                    clips += len(batch["video"])
                    micro_i += 1
                    self.batch_in_epoch += 1
                    if not sync:
                        t_mark = time.perf_counter()
                        busy += t_mark - t_got
                        continue
                    lr = lr_at(self.epoch + self.batch_in_epoch / self.sampler.batches_per_epoch(),
                               self.cfg.lr, self.cfg.schedule, self.cfg.epochs,
                               self.cfg.lr_milestones, self.cfg.warmup_epochs)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr * group.get("lr_scale", 1.0)
                    # the norm is logged every step; clipping only when configured
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(
                        self.model.parameters(), self.cfg.clip_grad_norm or float("inf")))
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    t_mark = time.perf_counter()
                    busy += t_mark - t_got
                    last = {f"train/{k}": all_mean(v, self.d) for k, v in parts.items()}
                    last["train/lr"] = lr
                    last["train/grad_norm"] = grad_norm
                    last["train/clips_per_s"] = clips * self.d.world / max(wait + busy, 1e-9)
                    last["train/data_wait_share"] = wait / max(wait + busy, 1e-9)
                    self.last_metrics = last
                    parts, wait, busy, clips = {}, 0.0, 0.0, 0
                    if live is not None:
                        # train rows at steps 0, 1, ...; each validation at the step after
                        # its epoch's last row. Set, not counted: a resumed run continues
                        # the numbering of its checkpoint whatever the log saw after it
                        live.step = self.step - 1
                        for k, v in last.items():
                            live.log_metric(k, v)
                        live.next_step()
                    bar.set_postfix(loss=f"{last['train/loss']:.3f}", lr=f"{lr:.2e}")
                    bar.update(1)
                    if self.step % self.cfg.checkpoint_every_steps == 0:
                        self._save(f"step-{self.step:07d}.pt")
                    if max_steps is not None and self.step >= max_steps:
                        stopped = True
                        self._save(f"step-{self.step:07d}.pt")
                        return FitResult(self.step, self.epoch, self.last_metrics,
                                         self._history(), True)
                # end of epoch
                self.epoch += 1
                self.batch_in_epoch = 0
                val = self._validate()
                if val:
                    self.val_history.append({"step": self.step, **val})
                self.last_metrics = self.last_metrics | val
                if live is not None:
                    live.step = self.step
                    for k, v in val.items():
                        live.log_metric(k, v, plot=True)
                self._save(f"epoch-{self.epoch:03d}.pt", val.get(self.monitor))
                if self.d.main:
                    shown = ", ".join(f"{k.split('/')[1]} {v:.3f}" for k, v in val.items())
                    bar.write(f"epoch {self.epoch}/{self.cfg.epochs}: {shown}")
        finally:
            bar.close()
            if live is not None and not stopped:
                live.end()
        return FitResult(self.step, self.epoch, self.last_metrics, self._history(), False)

    def _history(self) -> list[dict[str, float]]:
        """The validations of the whole run, resumed parts included."""
        return [{k: v for k, v in row.items() if k != "step"} for row in self.val_history]

    def _validate(self) -> dict[str, float]:
        if self.val_set is None or len(self.val_set) == 0:
            return {}
        result: dict[str, float] = {}
        if self.d.main:
            self.model.eval()
            # validation items are single clips (a training item may be a whole group of
            # them): batches of a micro-batch's clips, so the contrastive loss has negatives
            loader = DataLoader(self.val_set, batch_size=self.micro,
                                num_workers=self.cfg.loader_workers, collate_fn=self.collate)
            with torch.no_grad(), torch.autocast(self.d.device.type, dtype=torch.bfloat16,
                                                 enabled=self.autocast):
                result = self.task.validate(self.model, loader, self.d.device)
            self.model.train()
        if self.d.world > 1:
            payload = [result]
            dist.broadcast_object_list(payload, src=0)
            result = payload[0]
        return result
