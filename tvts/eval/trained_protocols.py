"""The protocols that train the encoder, run from params: classification fine-tuning and
text-to-video retrieval after contrastive fine-tuning of each evaluated model on one
downstream set, and the SVO-Probes test. What the evaluate stage calls per set."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import polars as pl
import torch

from tvts.config import Params
from tvts.errors import UserError
from tvts.eval.features import ClipItem, FrozenEncoder, ViewSpec, extract, weights_fingerprint
from tvts.eval.finetune import ClassifyData, FinetuneResult, finetune_classification
from tvts.eval.protocols import SetSplits, text_to_video
from tvts.eval.retrieval_finetune import CaptionedClips, finetune_retrieval
from tvts.eval.svo import similarities, svo_metrics
from tvts.models.tvts_model import TVTSModel
from tvts.storage import file_stamp
from tvts.tables import read_table
from tvts.train.distributed import Dist
from tvts.train.launch import launch_function, launches_workers


def rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in d.items()}


def _labelled_rows(rows: pl.DataFrame) -> list[tuple[str, str, str]]:
    rows = rows.filter(pl.col("label").is_not_null())
    return list(rows.select("downstream_id", "uri", "label").iter_rows())


def _fills_a_batch(items: int, batch: int, set_name: str, section: str) -> None:
    if items < batch:
        raise UserError(f"the train split of {set_name!r} has {items} training items, fewer than "
                        f"one batch (evaluate.{section}.batch_size = {batch}): lower "
                        f"evaluate.{section}.batch_size to at most {items}")


def finetune_set(params: Params, set_name: str, splits: SetSplits, test_spec: ViewSpec,
                 models: dict[str, TVTSModel], out_dir: Path, d: Dist
                 ) -> dict[str, FinetuneResult]:
    """Classification fine-tuning of each model's video encoder on the set (a finished run is
    reused while its weights, recipe and clips are unchanged)."""
    cfg, data = params.evaluate.finetune, params.data
    # the test clips' frame count (evaluate.classification_frames) for training too
    train_spec = ViewSpec(test_spec.frames, data.frame_size, data.resize_short, data.decoder)
    sets = ClassifyData(_labelled_rows(splits.train), _labelled_rows(splits.test), train_spec,
                        test_spec)
    epochs = cfg.epochs_per_format.get(params.set_format(set_name), cfg.epochs)
    _fills_a_batch(len(sets.train), cfg.batch_size, set_name, "finetune")
    out = {}
    for name, model in models.items():
        call = {"video": model.video, "data": sets, "cfg": cfg, "epochs": epochs,
                "out_dir": out_dir / name, "seed": params.seed,
                "weights": weights_fingerprint(model.video),
                "test_batch": params.evaluate.batch_size}
        try:
            if launches_workers(params.launch):  # launch.nproc_per_node processes, DDP
                out[name] = launch_function(finetune_classification, call, params.launch,
                                            f"evaluate.tasks.{set_name}: finetune ({name})")
            else:
                out[name] = finetune_classification(**call, d=d)
        except ValueError as e:
            raise UserError(f"evaluate.tasks.{set_name}: finetune: {e}") from None
    return out


def has_captioned_train(splits: SetSplits) -> bool:
    return bool((splits.train["captions"].list.len() > 0).any())


def t2v_finetune_set(params: Params, set_name: str, splits: SetSplits, test_spec: ViewSpec,
                     models: dict[str, TVTSModel], tokenizer: Any, out_dir: Path,
                     features_dir: Path, d: Dist
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Contrastive fine-tuning of each model on the set's captioned train clips, then
    text-to-video retrieval on its test clips by the tuned model: (metrics per model, training
    clips that did not decode and why)."""
    cfg, data, ev = params.evaluate.retrieval_finetune, params.data, params.evaluate
    pairs = [(vid, uri, c) for vid, uri, caps in
             splits.train.select("downstream_id", "uri", "captions").iter_rows()
             for c in caps or []]
    if not pairs:
        raise UserError(f"evaluate.tasks.{set_name}: t2v_finetune needs captioned clips in the "
                        "set's train split, and it has none (MSR-VTT: the 9k list or the "
                        "JSON's train videos); leave t2v_finetune out for this set")
    _fills_a_batch(len(pairs), cfg.batch_size, set_name, "retrieval_finetune")
    video = params.model.video
    # the test clips' frame count (evaluate.retrieval_frames) for training too
    clips = CaptionedClips(pairs, test_spec.frames, data.frame_size, data.resize_short,
                           data.decoder, video.tubelet, video.patch_size,
                           params.model.text.name, ev.max_caption_tokens)
    items = [ClipItem(i, u, file_stamp(u))
             for i, u in splits.test.select("downstream_id", "uri").iter_rows()]
    out, failed = {}, {}
    for name, model in models.items():
        call = {"model": copy.deepcopy(model), "data": clips, "cfg": cfg,
                "out_dir": out_dir / name, "seed": params.seed,
                "weights": weights_fingerprint(model)}
        if launches_workers(params.launch):  # launch.nproc_per_node processes, DDP
            tuned = launch_function(finetune_retrieval, call, params.launch,
                                    f"evaluate.tasks.{set_name}: t2v_finetune ({name})")
            tuned.model.to(d.device)
        else:
            tuned = finetune_retrieval(**call, d=d)
        enc = FrozenEncoder(f"{name}-t2v_finetune", tuned.model.video, tuned.model.proj.video,
                            weights_fingerprint(tuned.model.video, tuned.model.proj.video))
        feats = extract(items, [enc], test_spec, features_dir, ev.num_shards, ev.batch_size,
                        ev.loader_workers, d.device).features[enc.name]
        out[name] = rounded(text_to_video(tuned.model, tokenizer, feats, splits.test,
                                          tuple(ev.recall_at), ev.max_caption_tokens, d.device)
                            | {f"train_{k}": v for k, v in tuned.info.items()})
        failed |= tuned.failed
    return out, failed


def svo_test(params: Params, path: Path, models: dict[str, TVTSModel], tokenizer: Any,
             device: torch.device) -> dict[str, dict[str, Any]]:
    """The SVO-Probes metrics of each model on the downstream stage's probe table."""
    probes = read_table(path, "svo_probes")
    if not probes.height:
        raise UserError(f"{path} holds no usable probe (see data/downstream/quarantine.parquet)")
    d, ev = params.data, params.evaluate
    sims = similarities(models, tokenizer, probes, d.frame_size, d.resize_short,
                        ev.max_caption_tokens, device, ev.svo.batch_size)
    kinds = probes["neg_type"].to_list()
    return {name: rounded(svo_metrics(pos, neg, kinds, ev.svo.thresholds))
            for name, (pos, neg) in sims.items()}
