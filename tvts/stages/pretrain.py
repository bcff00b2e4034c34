"""`pretrain` stage: TVTS on the validated, deduplicated corpus -> models/pretrain
(checkpoints, exported encoder), metrics/pretrain.json, dvclive plots. Runs alone or under
torchrun."""

from __future__ import annotations

import math
import time
from pathlib import Path

from tvts import paths
from tvts.config import Params
from tvts.data.tvts_dataset import (
    SampleSpec,
    TVTSCollate,
    TVTSDataset,
    load_entries,
    split_entries,
    split_feasible,
)
from tvts.errors import UserError
from tvts.models.factory import build_tvts, model_signature
from tvts.reports.plots import pretrain_panels, write_curves
from tvts.stages.common import (
    PACK_DIR,
    packed_frames,
    record_params,
    split_packed,
    write_metrics,
)
from tvts.tables import frame, read_table, write_table
from tvts.train.checkpoint import BEST, load_checkpoint, seed_all
from tvts.train.distributed import cleanup, setup
from tvts.train.export import export_model
from tvts.train.loop import Trainer
from tvts.train.tasks import PretrainTask

VIDEOS = paths.PRETRAIN_VIDEOS
WORDS = paths.WORDS
OUT_DIR = paths.PRETRAIN_MODEL
METRICS = paths.metrics_of("pretrain")
LIVE = paths.live_dir("pretrain")
REPORT = paths.report_dir("pretrain")


def run(params: Params, videos_path: Path = VIDEOS, words_path: Path = WORDS,
        out_dir: Path = OUT_DIR, metrics_path: Path = METRICS, live_dir: Path | None = LIVE,
        max_steps: int | None = None, report_dir: Path = REPORT, pack_dir: Path = PACK_DIR
        ) -> str:
    t0 = time.perf_counter()
    cfg = params.pretrain
    params.check_video_init()  # before any data is read
    d = setup()
    try:
        seed_all(params.train_seed)
        videos = read_table(videos_path, "videos")
        words = read_table(words_path, "words")
        spec = SampleSpec.from_params(params)
        usable, never = split_feasible(load_entries(videos, words), spec)
        packed, on_device = packed_frames(params, d.device.type, pack_dir)
        usable, left_out = split_packed(usable, packed)
        never += left_out
        # the test videos are left out: evaluate reports on them, nothing here sees them
        splits = split_entries(usable, videos)
        train_entries, val_entries = splits.train, splits.val
        if not train_entries:
            raise UserError(f"{videos_path}: no training video can give a sample "
                            f"({len(never)} cannot hold the transcript windows)")
        train_set = TVTSDataset(train_entries, spec, params.train_seed, params.corpus.s3,
                                params.corpus.cache_dir, repeats=cfg.clips_per_video,
                                packed=packed, device_decode=on_device)
        # the validation draws follow the corpus seed: one held-out set for every training seed
        val_set = TVTSDataset(val_entries,
                              SampleSpec.from_params(params, False, cfg.val_mask_ratio),
                              params.seed + 1, params.corpus.s3, params.corpus.cache_dir,
                              repeats=cfg.val_clips_per_video, packed=packed,
                              device_decode=on_device) if val_entries else None
        model = build_tvts(params, cfg.grad_checkpointing)
        trainer = Trainer(model, PretrainTask(), cfg, train_set, val_set,
                          TVTSCollate(params.model.text.name, params.data.max_text_tokens),
                          out_dir, d, params.train_seed, model_signature(params), cfg.monitor,
                          cfg.monitor_mode, spec.samples_per_decode, live_dir)
        result = trainer.fit(max_steps)
        if not d.main:
            return ""
        reported = {**dict(never), **trainer.skipped}
        write_table(frame([{"video_id": k, "uri": None, "stage": "pretrain", "reason": v}
                           for k, v in sorted(reported.items())], "quarantine"),
                    out_dir / "sample_quarantine.parquet", "quarantine")
        if result.stopped_early:
            return f"pretrain: stopped after {result.steps} steps (resume continues)"
        best = out_dir / "checkpoints" / BEST
        if best.exists():
            model.load_state_dict(load_checkpoint(best, model_signature(params))["model"])
        export_model(model, out_dir, {"signature": model_signature(params),
                                      "monitor": cfg.monitor, "best": trainer.ckpt.best})
        record_params(params, out_dir)
        k = params.data.num_transcripts
        final = {k_.replace("/", "_"): round(v, 5) for k_, v in result.last_metrics.items()}
        final |= {"best_" + cfg.monitor.replace("/", "_"): trainer.ckpt.best,
                  "chance_sort_acc": 1 / k, "chance_sort_seq_acc": 1 / math.factorial(k),
                  "steps": result.steps, "train_videos": len(train_entries),
                  "val_videos": len(val_entries), "test_videos_held_back": len(splits.test),
                  "skipped_videos": len(reported),
                  "val_mask_ratio": cfg.val_mask_ratio, "processes": d.world}
        write_metrics(metrics_path, {
            "steps": result.steps,
            # the other-video control is evaluate's headline (on the test videos)
            # the held-out loss moves with any change of objective or data (sort.lambda, ...)
            **{key: final[key] for key in ("val_loss", "val_sort_acc", "val_r1_t2v")
               if key in final}},
            final)
        if live_dir is not None:
            write_curves(live_dir, pretrain_panels(1 / k), "pretrain", report_dir / "curves.png")
        first = result.val_history[0] if result.val_history else {}
        last = result.last_metrics
        masking = (f"{cfg.val_mask_ratio:.0%} masked" if cfg.val_mask_ratio else "unmasked")
        return (f"pretrain: {result.steps} steps, {result.epochs_done} epochs; held-out sort "
                f"accuracy {first.get('val/sort_acc', float('nan')):.3f} -> "
                f"{last.get('val/sort_acc', float('nan')):.3f} ({masking}; chance "
                f"{1 / k:.3f}; with "
                f"another clip's video {last.get('val/sort_acc_other_video', float('nan')):.3f}"
                f"); {time.perf_counter() - t0:.0f} s")
    finally:
        cleanup()
