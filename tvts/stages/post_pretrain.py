"""`post_pretrain` stage: from the pretrain checkpoint, contrastive training on captioned
images (1 frame, repeated to fill a cube) alternating with captioned clips (4 frames),
masking 0 -> models/post_pretrain, metrics/post_pretrain.json."""

from __future__ import annotations

import time
from pathlib import Path

from tvts import paths
from tvts.config import Params
from tvts.data.captioned import AlternatingGroups, CaptionedDataset, read_cc3m, read_webvid
from tvts.data.tvts_dataset import TVTSCollate
from tvts.errors import UserError
from tvts.models.factory import build_tvts, model_signature
from tvts.reports.plots import POST_PRETRAIN_PANELS, write_curves
from tvts.stages.common import record_params, write_metrics
from tvts.train.checkpoint import BEST, load_checkpoint, seed_all
from tvts.train.distributed import cleanup, setup
from tvts.train.export import export_model
from tvts.train.loop import Trainer
from tvts.train.tasks import ContrastiveTask

PRETRAINED = paths.PRETRAIN_MODEL / paths.CHECKPOINTS / BEST
OUT_DIR = paths.POST_PRETRAIN_MODEL
METRICS = paths.metrics_of("post_pretrain")
LIVE = paths.live_dir("post_pretrain")
REPORT = paths.report_dir("post_pretrain")


def run(params: Params, images_root: Path | None = None, clips_root: Path | None = None,
        init: Path = PRETRAINED, out_dir: Path = OUT_DIR, metrics_path: Path = METRICS,
        live_dir: Path | None = LIVE, report_dir: Path = REPORT) -> str:
    t0 = time.perf_counter()
    cfg = params.post_pretrain
    d = setup()
    try:
        seed_all(params.seed)
        data, video = params.data, params.model.video
        images = read_cc3m(images_root or cfg.images)
        clips = read_webvid(clips_root or cfg.clips)
        # the held-out gallery: val_clips clips (a tenth of 32 was 3 clips, where R@1 = 100
        # meant little); every image trains (a held-out image was never validated)
        held_clip = min(cfg.val_clips, len(clips) // 2)
        if held_clip < 2:
            raise UserError(f"{clips_root or cfg.clips}: {len(clips)} captioned clip(s); "
                            "post-pretraining holds out post_pretrain.val_clips of them (at "
                            "most half) to validate on, and needs at least 4")

        def dataset(items, frames, train):  # type: ignore[no-untyped-def]
            return CaptionedDataset(items, frames, data.frame_size, data.resize_short,
                                    data.decoder, video.tubelet, video.patch_size, train,
                                    params.seed, data.max_tries)

        per_rank = cfg.batch_size // d.world
        group = cfg.micro_batch or per_rank
        train_set = AlternatingGroups(
            [dataset(images, cfg.image_frames, True),
             dataset(clips[held_clip:], cfg.clip_frames, True)], group, params.seed, d.world)
        val_set = dataset(clips[:held_clip], cfg.clip_frames, False)
        if len(train_set) == 0:
            raise UserError(f"too few captioned items for batches of {group}")
        # post-pretraining is the contrastive loss (captions have no order to sort), also
        # after a pretraining that left it out (contrastive.enabled: false, the M_sort row)
        contrastive = params.contrastive.model_copy(update={"enabled": True})
        model = build_tvts(params.model_copy(update={"contrastive": contrastive}),
                           cfg.grad_checkpointing)
        # the pretrained weights (masking is 0 here: nothing in the model depends on it)
        model.load_state_dict(load_checkpoint(init, model_signature(params))["model"])
        trainer = Trainer(model, ContrastiveTask(), cfg, train_set, val_set,
                          TVTSCollate(params.model.text.name, params.data.max_text_tokens),
                          out_dir, d, params.seed, model_signature(params), cfg.monitor,
                          cfg.monitor_mode, clips_per_item=group,  # an item is a batch
                          live_dir=live_dir, shuffle=False)
        result = trainer.fit()
        if not d.main:
            return ""
        best = out_dir / "checkpoints" / BEST
        if best.exists():
            model.load_state_dict(load_checkpoint(best, model_signature(params))["model"])
        export_model(model, out_dir, {"signature": model_signature(params),
                                      "init": str(init), "best": trainer.ckpt.best})
        record_params(params, out_dir)
        final = {k.replace("/", "_"): round(v, 5) for k, v in result.last_metrics.items()}
        final |= {"steps": result.steps, "images": len(images), "clips": len(clips),
                  "processes": d.world}
        write_metrics(metrics_path, {
            "steps": result.steps,
            # val_r1_chance (100 / val_clips, a constant of the setup) stays in the details:
            # the headline's columns fit a terminal in `dvc metrics show`
            **{k: final[k] for k in ("val_loss", "val_r1_t2v") if k in final}}, final)
        if live_dir is not None:
            write_curves(live_dir, POST_PRETRAIN_PANELS, "post_pretrain",
                         report_dir / "curves.png")
        return (f"post_pretrain: {result.steps} steps on {len(images)} captioned images and "
                f"{len(clips)} clips; held-out clip->text R@1 "
                f"{result.last_metrics.get('val/r1_v2t', float('nan')):.1f}% over {held_clip} "
                f"clips (chance {100 / held_clip:.1f}%); "
                f"{time.perf_counter() - t0:.0f} s")
    finally:
        cleanup()
