"""Text-to-video retrieval after contrastive fine-tuning (the paper's tables 6 and 10): the
whole model (encoders and projections; the text encoder unless `model.text.freeze`) trained
by the shared trainer with the contrastive loss on a captioned set's train split, every
(clip, caption) pair an item, captions of one clip never each other's negatives. The test
clips are then encoded by the fine-tuned model (through the feature cache, keyed by its
weights) and ranked as in the zero-shot protocol.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tvts.config import RetrievalFinetuneConfig
from tvts.data.captioned import CaptionedDataset, CaptionedItem
from tvts.data.tvts_dataset import TVTSCollate
from tvts.eval.runs import claim_run_dir, run_fingerprint
from tvts.models.tvts_model import TVTSModel
from tvts.provenance import code_digest, model_modules
from tvts.storage import atomic_path, atomic_write_text
from tvts.train.checkpoint import seed_all
from tvts.train.distributed import Dist
from tvts.train.loop import Trainer
from tvts.train.tasks import ContrastiveTask

RESULT = "result.json"
WEIGHTS = "model.safetensors"


@dataclass(frozen=True)
class CaptionedClips:
    pairs: list[tuple[str, str, str]]  # (clip id, uri, caption), the train split's
    frames: int
    frame_size: int
    resize_short: int
    decoder: str
    tubelet: int
    patch_size: int
    text_model: str
    max_tokens: int


@dataclass
class RetrievalFinetune:
    model: TVTSModel  # fine-tuned (eval mode)
    info: dict[str, Any]  # steps, pairs, clips, train loss
    failed: dict[str, str]  # training clips that did not decode (replaced), and why


def finetune_retrieval(model: TVTSModel, data: CaptionedClips, cfg: RetrievalFinetuneConfig,
                       out_dir: Path, d: Dist, seed: int, weights: str) -> RetrievalFinetune:
    """`model` fine-tuned in place; a finished run of the same fingerprint (weights, recipe,
    pairs) is loaded from `out_dir` instead of trained again."""
    from safetensors.torch import load_file, save_file

    # the code that trains (this module's imports, the model's classes) and the device
    fp = run_fingerprint("t2v_finetune", weights, cfg.model_dump(mode="json"), data, seed,
                         code_digest(__name__, *model_modules(model)), d.device.type)
    result, saved = out_dir / RESULT, out_dir / WEIGHTS
    if result.exists() and saved.exists():
        info = json.loads(result.read_text())
        if info.get("fingerprint") == fp:
            model.load_state_dict(load_file(str(saved)))
            return RetrievalFinetune(model.eval(), info["info"], info.get("failed", {}))
    if not data.pairs:
        raise ValueError("retrieval fine-tuning needs captioned training clips")
    claim_run_dir(out_dir, fp, d)
    seed_all(seed)
    items = [CaptionedItem(vid, uri, caption, False) for vid, uri, caption in data.pairs]
    train_set = CaptionedDataset(items, data.frames, data.frame_size, data.resize_short,
                                 data.decoder, data.tubelet, data.patch_size, True, seed)
    trainer = Trainer(model, ContrastiveTask(), cfg, train_set, None,
                      TVTSCollate(data.text_model, data.max_tokens), out_dir, d, seed,
                      {"protocol": "t2v_finetune", "fingerprint": fp}, "val/r1_t2v", "max",
                      live_dir=out_dir / "dvclive" if d.main else None)
    fit = trainer.fit()
    info = {"steps": fit.steps, "pairs": len(data.pairs),
            "clips": len({vid for vid, _, _ in data.pairs}), "epochs": cfg.epochs,
            "loss": fit.last_metrics.get("train/loss", float("nan")),
            "skipped": len(trainer.skipped)}
    if d.main:
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        with atomic_path(saved) as tmp:
            save_file(state, str(tmp))
        atomic_write_text(result, json.dumps({"fingerprint": fp, "info": info,
                                              "failed": trainer.skipped}, indent=1))
        shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return RetrievalFinetune(model.eval(), info, dict(trainer.skipped))
