"""The ordering objectives of the ablation grids learn a planted order and nothing from a shuffled
one: VCOP-style clip order (`sort.target: clips`), MERLOT-like frame reordering given the
transcripts (`frames_given_transcripts`) and sort-only TVTS (`contrastive.enabled: false`).

Each trains the real model classes (tiny sizes) with the objective's own loss on synthetic
clips whose K segments show one of a few colours each; the transcripts name the colours. A
"planted" clip's order is readable (brightness rising with time for the video-only baseline;
the colours the transcripts name for the others); a "shuffled" clip's segments are permuted
before the model sees them, so the order the loss asks for is not in the input. Held-out
clips: the planted runs place nearly every item, the shuffled runs stay near chance.
"""

from __future__ import annotations

import pytest
import torch

from tvts.models.factory import build_tvts
from tvts.models.ordering import in_true_order, shuffled_segments

from .conftest import micro

K = 4
COLOURS = torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1], [-1, 1, 1],
                        [1, -1, 1]])
NAMES = ["red", "green", "blue", "yellow", "cyan", "magenta"]


def _params(target: str, contrastive: bool = True):
    return micro({"data": {"num_frames": 8, "frame_size": 16, "resize_short": 16},
                  "sort": {"target": target, "lambda": 1.0, "blocks": 1},
                  "contrastive": {"enabled": contrastive},
                  "model": {"video": {"patch_size": 8, "width": 32, "depth": 1, "heads": 2}}})


def _clips(n: int, planted: bool, gen: torch.Generator, brightness: bool
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """n clips of K two-frame segments, each a distinct colour (and, with `brightness`, a
    level rising with time); returns (video (n, 3, 8, 16, 16), colour of each segment in
    time order (n, K)). Unplanted: the segments are permuted after the colours were named,
    so the named order is not the shown one."""
    colours = torch.stack([torch.randperm(len(COLOURS), generator=gen)[:K] for _ in range(n)])
    level = torch.linspace(-0.9, 0.9, K) if brightness else torch.zeros(K)
    seg = COLOURS[colours] * 0.5 + level[None, :, None]  # (n, K, 3)
    if not planted:
        perm = torch.stack([torch.randperm(K, generator=gen) for _ in range(n)])
        seg = torch.gather(seg, 1, perm[..., None].expand_as(seg))
    video = seg.permute(0, 2, 1)[..., None, None, None].expand(n, 3, K, 2, 16, 16)
    noise = 0.1 * torch.randn(n, 3, K, 2, 16, 16, generator=gen)
    return (video + noise).reshape(n, 3, 2 * K, 16, 16), colours


class _NamedColours:
    """The transcripts: each names its segment's colour. Features from the real (frozen)
    text encoder, computed once per colour name (the tests' shortcut: the model's frozen
    encoder gives the same vector for the same sentence every time)."""

    def __init__(self, model):
        from tvts.models.text_encoder import load_tokenizer

        tok = load_tokenizer("bundled:minilm-l6")
        enc = tok([f"it turns {c}" for c in NAMES], padding=True, return_tensors="pt")
        with torch.no_grad():
            table = model.text(enc["input_ids"], enc["attention_mask"])
        # the sentences differ in one word: centred and scaled, that word is what the
        # features carry (a few hundred steps learn the match instead of thousands)
        self.table = (table - table.mean(0)) / table.std(0).clamp_min(1e-6)

    def encode(self, colours: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """The transcripts of `colours` (time order), shuffled as `order` says: transcript i
        is the one at position order[:, i]."""
        time_ordered = self.table[colours]  # (n, K, D)
        return torch.gather(time_ordered, 1, order[..., None].expand_as(time_ordered))


def _train_and_test(target: str, planted: bool, contrastive: bool, steps: int) -> float:
    """Held-out accuracy (per item) of the objective's own prediction after training."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    model = build_tvts(_params(target, contrastive))
    text = _NamedColours(model)
    model.encode_text = lambda ids, mask: ids  # the ids slot carries the features (above)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3)
    brightness = target == "clips"  # the video alone must show the order
    model.train()
    for _ in range(steps):
        video, colours = _clips(16, planted, gen, brightness)
        order = torch.stack([torch.randperm(K, generator=gen) for _ in range(16)])
        out = model(video, text.encode(colours, order), torch.ones(16, K), order)
        opt.zero_grad()
        out["loss_sort"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        video, colours = _clips(256, planted, gen, brightness)
        order = torch.stack([torch.randperm(K, generator=gen) for _ in range(256)])
        return float(model(video, text.encode(colours, order), torch.ones(256, K),
                           order)["sort_acc"])


@pytest.mark.parametrize("target, contrastive, steps", [
    ("clips", True, 80), ("frames_given_transcripts", True, 80), ("transcripts", False, 120)],
    ids=["vcop", "merlot_like", "sort_only"])
def test_a_planted_order_is_learned_and_a_shuffled_one_is_not(target, contrastive, steps):
    planted = _train_and_test(target, True, contrastive, steps)
    shuffled = _train_and_test(target, False, contrastive, steps)
    chance = 1 / K
    assert planted > 0.9, f"{target}: planted order held-out accuracy {planted:.2f}"
    assert shuffled < chance + 0.15, f"{target}: shuffled order held-out {shuffled:.2f}"


def test_segments_are_cut_shuffled_and_put_back():
    video = torch.arange(2 * 8, dtype=torch.float32).reshape(2, 1, 8, 1, 1).expand(2, 3, 8, 2, 2)
    keep = torch.arange(2 * 4 * 1).reshape(2, 4, 1)
    order = torch.tensor([[2, 0, 3, 1], [0, 1, 2, 3]])
    segs, kept = shuffled_segments(video, keep, order, tubelet=2)
    assert segs.shape == (8, 3, 2, 2, 2) and kept.shape == (8, 1, 1)
    # item i of clip 0 is the segment at true position order[0, i]: frames 2p, 2p + 1
    assert [int(s[0, 0, 0, 0]) for s in segs[:4]] == [4, 0, 6, 2]
    assert [int(k) for k in kept[:4, 0, 0]] == [2, 0, 3, 1]
    back = in_true_order(segs[:, 0, 0, 0, 0].reshape(2, 4), order)
    assert back.tolist() == [[0, 2, 4, 6], [8, 10, 12, 14]]
    with pytest.raises(ValueError, match="segments of whole tubelets"):
        shuffled_segments(video[:, :, :6], None, order, tubelet=2)


def test_an_ordering_baseline_needs_segments_of_whole_tubelets():
    with pytest.raises(ValueError, match=r"data\.num_frames to a multiple of 8"):
        micro({"sort": {"target": "clips"}})  # micro: 4 frames, 2 slices, K = 4


@pytest.mark.parametrize("target", ["clips", "frames_given_transcripts"])
def test_an_ordering_baseline_is_its_own_model_and_leaves_the_sorter_unused(target, tmp_path):
    from tvts.models.factory import model_signature
    from tvts.train.tasks import PretrainTask

    p = _params(target)
    model = build_tvts(p)
    assert model.ordering is not None and model.sort_modeling == (
        "factorial" if target == "clips" else "kway")
    # DDP must be told: the transcript sorter gets no gradient
    assert PretrainTask().leaves_parameters_unused(model)
    assert not PretrainTask().leaves_parameters_unused(build_tvts(_params("transcripts")))
    # a TVTS checkpoint does not load into a baseline's model, nor the reverse
    assert model_signature(p)["sort"]["target"] == target
    assert "target" not in model_signature(_params("transcripts"))["sort"]
    assert any(k.startswith("ordering.") for k in model.state_dict())
    video, colours = _clips(2, True, torch.Generator().manual_seed(0), True)
    order = torch.stack([torch.randperm(K) for _ in range(2)])
    text = _NamedColours(model)
    model.encode_text = lambda ids, mask: ids
    out = model(video, text.encode(colours, order), torch.ones(2, K), order)
    assert "video_tokens" not in out  # no other-video control for a video-side order
    assert out["loss"].requires_grad
