"""Build the models from params (the library never reads params.yaml itself)."""

from __future__ import annotations

import logging
from typing import Any

from tvts.config import Params
from tvts.models.init_weights import load_image_vit
from tvts.models.ordering import ClipOrderHead, FrameReorderer
from tvts.models.sorter import SortTransformer
from tvts.models.text_encoder import TextEncoder
from tvts.models.tvts_model import ObjectiveConfig, TVTSModel
from tvts.models.video_vit import VideoViT, VideoViTConfig

log = logging.getLogger(__name__)


def video_config(params: Params, num_frames: int | None = None) -> VideoViTConfig:
    v = params.model.video
    return VideoViTConfig(img_size=params.data.frame_size,
                          num_frames=num_frames or params.data.num_frames,
                          patch_size=v.patch_size, tubelet=v.tubelet, width=v.width,
                          depth=v.depth, heads=v.heads, drop_path=v.drop_path,
                          temporal_init=v.temporal_init, position_init=v.position_init)


def build_video_encoder(params: Params, grad_checkpointing: bool = False) -> VideoViT:
    model = VideoViT(video_config(params), grad_checkpointing=grad_checkpointing)
    if params.model.video.init not in (None, "scratch"):
        report = load_image_vit(model, params.model.video.init)
        log.info("model.video.init: %s", report.summary())
    return model


def build_tvts(params: Params, grad_checkpointing: bool = False) -> TVTSModel:
    video = build_video_encoder(params, grad_checkpointing)
    t = params.model.text
    text = TextEncoder(t.name, t.dropout, t.freeze, t.pooling)
    sorter = SortTransformer(video.cfg.width, video.cfg.heads, params.sort.blocks,
                             params.data.num_transcripts, params.sort.modeling, text.dim,
                             params.sort.time_embedding,
                             max(1, params.data.num_frames // video.cfg.tubelet))
    objective = ObjectiveConfig(temperature=params.contrastive.temperature,
                                contrastive=params.contrastive.enabled,
                                sort_lambda=params.sort.lambda_,
                                stop_gradient=params.sort.stop_gradient,
                                target=params.sort.target)
    return TVTSModel(video, text, sorter, params.model.embed_dim, objective,
                     ordering_head(params, video.cfg.width, video.cfg.heads, text.dim))


def ordering_head(params: Params, width: int, heads: int, text_dim: int
                  ) -> ClipOrderHead | FrameReorderer | None:
    """The head of an ordering baseline (sort.target), None for TVTS's transcript sorting."""
    k = params.data.num_transcripts
    if params.sort.target == "clips":
        return ClipOrderHead(width, k)
    if params.sort.target == "frames_given_transcripts":
        return FrameReorderer(width, heads, params.sort.blocks, k, text_dim)
    return None


def model_signature(params: Params) -> dict[str, Any]:
    """What a checkpoint must match to be loaded into this model."""
    # architecture only: initialisation, regularisation and freezing do not change the weights'
    # shapes or meaning, so a checkpoint moves between such settings
    arch = params.model.model_dump(mode="json", exclude={
        "video": {"init", "drop_path", "temporal_init", "position_init"},
        "text": {"freeze", "dropout"}})
    sort = {"modeling": params.sort.modeling, "blocks": params.sort.blocks,
            "time_embedding": params.sort.time_embedding}
    if params.sort.target != "transcripts":  # an ordering baseline's head (TVTS's: as before)
        sort["target"] = params.sort.target
    return {"model": arch,
            "num_frames": params.data.num_frames, "frame_size": params.data.frame_size,
            "num_transcripts": params.data.num_transcripts, "sort": sort}
