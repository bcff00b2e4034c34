"""Fine-tuning for classification (VideoMAE's protocol, the paper's tables 5 and 7): the
encoder with a head, trained end to end by the shared trainer (DDP, exact resume,
checkpoints, dvclive) with layer-wise lr decay, drop path, label smoothing, mixup / cutmix
and RandAugment, then tested on T temporal x S spatial views per clip, the class
probabilities averaged over the views.

A finished run leaves `results/<fingerprint>.npz` in its folder, the fingerprint covering
everything it depends on (the encoder's weights, the recipe, the clips and their files, the code
that trains and tests): a rerun with the same fingerprint reuses it, and results of other
fingerprints stay beside it (the last RESULTS_KEPT), so an edit reverted finds its old results
again; an interrupted run resumes from its last checkpoint.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from tvts.config import FinetuneConfig
from tvts.data.augment import ClipMixup, ClipRandAugment
from tvts.data.labelled import LabelledClips, LabelledItem
from tvts.data.transforms import batch_to, normalize
from tvts.eval.features import ViewSpec
from tvts.eval.runs import claim_run_dir, run_fingerprint
from tvts.metrics import topk_accuracy
from tvts.models.classifier import VideoClassifier, with_drop_path
from tvts.models.video_vit import VideoViT
from tvts.provenance import code_digest, model_modules
from tvts.storage import atomic_path
from tvts.train.checkpoint import seed_all
from tvts.train.distributed import Dist
from tvts.train.loop import Trainer, use_bf16
from tvts.train.param_groups import layer_decay_groups

RESULTS = "results"
RESULTS_KEPT = 8  # per run folder: a few KB each (test probabilities)


def result_path(out_dir: Path, fingerprint: str) -> Path:
    return out_dir / RESULTS / f"{fingerprint}.npz"


def _prune_results(out_dir: Path) -> None:
    kept = sorted((out_dir / RESULTS).glob("*.npz"), key=lambda p: p.stat().st_mtime_ns)
    for old in kept[:-RESULTS_KEPT]:
        old.unlink(missing_ok=True)


def labelled_collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Training items (one clip each) -> {"video": uint8 (B, C, T, H, W), "label": (B,)}."""
    return {"video": torch.cat([b["clips"] for b in batch]),
            "label": torch.tensor([b["label"] for b in batch], dtype=torch.long),
            "skipped": [s for b in batch for s in b["skipped"]]}


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.sum(-target * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class ClassifyTask:
    """Cross-entropy on mixed clips and soft targets (or label-smoothed hard ones)."""

    def leaves_parameters_unused(self, model: nn.Module) -> bool:
        return False  # every weight of the encoder and the head is in the loss

    def __init__(self, mixup: ClipMixup | None, label_smoothing: float):
        self.mixup, self.label_smoothing = mixup, label_smoothing

    def loss(self, model: nn.Module, batch: dict[str, Any], world: int
             ) -> dict[str, torch.Tensor]:
        video, labels = batch["video"], batch["label"]
        if self.mixup is not None:
            video, target = self.mixup(video, labels)
            return {"loss": soft_cross_entropy(model(video), target)}
        return {"loss": F.cross_entropy(model(video).float(), labels,
                                        label_smoothing=self.label_smoothing)}

    def validate(self, model: nn.Module, loader: DataLoader, device: torch.device
                 ) -> dict[str, float]:
        hits = n = 0
        for batch in loader:
            batch = batch_to(batch, device)
            hits += int((model(batch["video"]).argmax(1) == batch["label"]).sum())
            n += len(batch["label"])
        return {"val/top1": 100 * hits / max(n, 1)}


def average_views(logits: torch.Tensor, views: int) -> torch.Tensor:
    """(N x V, C) logits of the V views of N clips, clip-major -> (N, C) class probabilities,
    the softmax of each view averaged over its clip's views."""
    return F.softmax(logits.float(), dim=-1).reshape(-1, views, logits.shape[-1]).mean(1)


def _items_collate(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


@torch.no_grad()
def predict_views(model: nn.Module, items: Sequence[LabelledItem], spec: ViewSpec,
                  device: torch.device, batch_size: int = 8, workers: int = 0,
                  autocast: bool = False
                  ) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    """Class probabilities of each clip over its `spec.temporal x spec.spatial` views:
    (ids of the clips that decoded, (N, C) probabilities, [(id, reason)] of those that did
    not)."""
    data = LabelledClips(list(items), spec.frames, spec.frame_size, spec.resize_short,
                         spec.decoder, train=False, temporal_views=spec.temporal,
                         spatial_views=spec.spatial)
    loader = DataLoader(data, batch_size=batch_size, num_workers=workers,
                        collate_fn=_items_collate)
    model.eval()
    ids, probs, failed = [], [], []
    for batch in loader:
        ok = [b for b in batch if b["clips"] is not None]
        failed += [s for b in batch for s in b["skipped"]]
        if not ok:
            continue
        clips = normalize(torch.stack([b["clips"] for b in ok]).flatten(0, 1).to(device))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(clips)
        probs.append(average_views(logits, spec.views).cpu())
        ids += [b["item_id"] for b in ok]
    out = torch.cat(probs).numpy() if probs else np.zeros((0, 0), np.float32)
    return ids, out, failed


@dataclass
class FinetuneResult:
    metrics: dict[str, float]
    ids: list[str]  # test clips, in the rows' order
    actual: list[str]  # their labels
    classes: list[str]
    probabilities: np.ndarray  # (N, classes), averaged over views
    failed: list[tuple[str, str]]

    def save(self, path: Path, fingerprint: str) -> None:
        buf = io.BytesIO()
        np.savez(buf, fingerprint=np.array(fingerprint), metrics=np.array(json.dumps(
            self.metrics)), ids=np.array(self.ids, dtype=str),
            actual=np.array(self.actual, dtype=str), classes=np.array(self.classes, dtype=str),
            probabilities=self.probabilities,
            failed=np.array([f"{k}\t{r}" for k, r in self.failed], dtype=str))
        with atomic_path(path) as tmp:
            tmp.write_bytes(buf.getvalue())

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> FinetuneResult | None:
        """The saved result, or None when missing, unreadable or of another fingerprint."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["fingerprint"]) != fingerprint:
                    return None
                return cls(json.loads(str(z["metrics"])), z["ids"].tolist(),
                           z["actual"].tolist(), z["classes"].tolist(), z["probabilities"],
                           [tuple(s.split("\t", 1)) for s in z["failed"].tolist()])
        except (OSError, ValueError, KeyError):
            return None


@dataclass(frozen=True)
class ClassifyData:
    train: list[tuple[str, str, str]]  # (id, uri, label name)
    test: list[tuple[str, str, str]]
    train_spec: ViewSpec  # frames, size, decoder of the training clips (1 x 1)
    test_spec: ViewSpec  # T x S views


def finetune_classification(video: VideoViT, data: ClassifyData, cfg: FinetuneConfig,
                            epochs: int, out_dir: Path, d: Dist, seed: int,
                            weights: str, test_batch: int = 8) -> FinetuneResult:
    """Fine-tune a copy of `video` with a new head on `data.train`, test on `data.test`
    (`test_batch` clips, all their views, per forward pass). `weights`: a fingerprint of
    `video`'s weights (part of the run's fingerprint)."""
    classes = sorted({label for _, _, label in data.train})
    if len(classes) < 2:
        raise ValueError(f"fine-tuning needs training clips of at least two classes; the "
                         f"train split has {len(classes)}")
    code = {c: i for i, c in enumerate(classes)}
    test = [t for t in data.test if t[2] in code]
    if not test:
        raise ValueError("fine-tuning has no test clip of a class seen in training")
    bf16 = use_bf16(cfg.precision, d.device)
    # the code that trains and tests (this module's imports, the model's classes) and what
    # changes the arithmetic (test batch, device, precision) are part of the result's key
    fp = run_fingerprint("finetune", weights, cfg.model_dump(mode="json"), epochs,
                         data.train, test, data.train_spec, data.test_spec, seed,
                         code_digest(__name__, *model_modules(video)),
                         {"test_batch": test_batch, "device": d.device.type, "bf16": bf16})
    done = FinetuneResult.load(result_path(out_dir, fp), fp)
    if done is not None:
        return done
    claim_run_dir(out_dir, fp, d)
    seed_all(seed)
    model = VideoClassifier(with_drop_path(video, cfg.drop_path), len(classes),
                            cfg.head_dropout, cfg.head_init_scale)
    s = data.train_spec
    augment = ClipRandAugment(cfg.randaugment, s.frame_size) if cfg.randaugment else None
    train_set = LabelledClips([LabelledItem(i, u, code[lab]) for i, u, lab in data.train],
                              s.frames, s.frame_size, s.resize_short, s.decoder, train=True,
                              seed=seed, augment=augment)
    mixup = (ClipMixup(len(classes), cfg.mixup, cfg.cutmix, cfg.mixup_prob,
                       cfg.mixup_switch_prob, cfg.label_smoothing)
             if cfg.mixup > 0 or cfg.cutmix > 0 else None)
    # the paper's lr is for its batch: scaled linearly, as VideoMAE does
    scaled = cfg.model_copy(update={"lr": cfg.lr * cfg.batch_size / 256, "epochs": epochs})
    groups = layer_decay_groups(model, cfg.weight_decay, cfg.layer_decay, model.depth)
    trainer = Trainer(model, ClassifyTask(mixup, cfg.label_smoothing), scaled, train_set,
                      None, labelled_collate, out_dir, d, seed,
                      {"protocol": "finetune", "fingerprint": fp}, "val/top1", "max",
                      live_dir=out_dir / "dvclive" if d.main else None, param_groups=groups)
    fit = trainer.fit()
    ids, probs, failed = predict_views(model, [LabelledItem(i, u, code[lab])
                                               for i, u, lab in test],
                                       data.test_spec, d.device, test_batch,
                                       cfg.loader_workers, bf16)
    label_of = {i: lab for i, _, lab in test}
    actual = [label_of[i] for i in ids]
    metrics = topk_accuracy(torch.as_tensor(probs), torch.tensor([code[a] for a in actual]))
    metrics |= {"train_clips": len(data.train), "test_clips": len(ids),
                "classes": len(classes), "chance_top1": 100 / len(classes),
                "epochs": epochs, "steps": fit.steps,
                "train_loss": fit.last_metrics.get("train/loss", float("nan"))}
    result = FinetuneResult(metrics, ids, actual, classes, probs,
                            failed + sorted(trainer.skipped.items()))
    if d.main:
        result.save(result_path(out_dir, fp), fp)
        _prune_results(out_dir)
        # the optimiser state is 3x the weights: not kept once the result is
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return result
