"""Rules across params sections, which a stage would otherwise meet only after loading data:
the evaluated sets exist, the shapes fit the model's patches and tubelets, the batches split
over the training processes. Each raises ValueError naming the keys and a value that works."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tvts.config.params import Params


def tasks_name_sets(params: Params) -> None:
    """evaluate.tasks names only sets that downstream.sets defines."""
    unknown = [s for s in params.evaluate.tasks or {} if s not in params.downstream.sets]
    if unknown:
        raise ValueError(f"evaluate.tasks names set(s) {unknown} that downstream.sets does "
                         f"not define ({sorted(params.downstream.sets)})")


def shapes_fit(params: Params) -> None:
    """Frame counts and sizes fit the model's patches and tubelets."""
    video, data, post = params.model.video, params.data, params.post_pretrain
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
    rf = params.evaluate.retrieval_frames
    if rf is not None and rf % t:
        raise ValueError(
            f"evaluate.retrieval_frames = {rf} is not a multiple of model.video.tubelet = "
            f"{t}: set it to e.g. {_multiple_near(rf, t)}")
    if post.image_frames >= t and post.image_frames % t:
        raise ValueError(
            f"post_pretrain.image_frames = {post.image_frames} is not a multiple of "
            f"model.video.tubelet = {t}: set it to 1 (an image fills one cube) or e.g. "
            f"{_multiple_near(post.image_frames, t)}")


def segments_fit(params: Params) -> None:
    """The ordering baselines cut each clip into data.num_transcripts segments of whole
    tubelets."""
    if params.sort.target == "transcripts":
        return
    k, t = params.data.num_transcripts, params.model.video.tubelet
    slices = params.data.num_frames // t
    if slices % k:
        raise ValueError(
            f"sort.target = {params.sort.target} cuts each clip into data.num_transcripts = "
            f"{k} segments, but data.num_frames = {params.data.num_frames} makes {slices} "
            f"tubelet slice(s) (model.video.tubelet = {t}): set data.num_frames to a multiple "
            f"of {k * t}, e.g. {_multiple_near(params.data.num_frames, k * t)}")


def batches_split(params: Params, world: int) -> None:
    """Each training batch splits into processes x micro-batches x accumulation (`world`: the
    process count, torchrun's WORLD_SIZE)."""
    for name, cfg, per_item in (("pretrain", params.pretrain, params.data.samples_per_decode),
                                ("post_pretrain", params.post_pretrain, 1)):
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


def _multiple_near(value: int, of: int) -> int:
    """The multiple of `of` nearest `value` (at least `of`)."""
    return max(of, round(value / of) * of)


def _divisor_near(value: int, wanted: int) -> int:
    """The divisor of `value` nearest `wanted`, the smaller on a tie."""
    return min((d for d in range(1, value + 1) if value % d == 0),
               key=lambda d: (abs(d - wanted), d))
