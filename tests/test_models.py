"""Video ViT, initialisation from image weights, text encoder, sorter, TVTS model."""

from __future__ import annotations

import time

import pytest
import timm
import torch
from safetensors.torch import save_file

from tvts.config import resolve
from tvts.errors import UserError
from tvts.models.factory import build_tvts, video_config
from tvts.models.init_weights import load_image_vit
from tvts.models.sorter import SortTransformer
from tvts.models.text_encoder import TextEncoder, load_tokenizer, resolve_text_model
from tvts.models.video_vit import VideoViT, VideoViTConfig, num_tokens, sample_keep

from .conftest import micro

SMALL = VideoViTConfig(img_size=32, num_frames=16, patch_size=8, tubelet=2, width=48, depth=2,
                       heads=3)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _keep(b: int, slices: int, patches: int, ratio: float) -> torch.Tensor:
    return torch.stack([sample_keep(slices, patches, ratio) for _ in range(b)])


# ---------------------------------------------------------------- video encoder
@pytest.mark.parametrize(("frames", "slices"), [(16, 8), (4, 2), (1, 1)])
def test_shapes_for_16_4_and_1_frame_inputs(frames, slices):
    m = VideoViT(SMALL).eval()
    cls, tokens = m(torch.randn(2, 3, frames, 32, 32))
    assert cls.shape == (2, 48)
    assert tokens.shape == (2, 1 + slices * 16, 48)


def test_token_count_under_masking():
    m = VideoViT(SMALL).eval()
    keep = _keep(2, 8, 16, 0.75)
    assert keep.shape == (2, 8, 4)
    assert all(len(set(row.tolist())) == 4 for row in keep.reshape(-1, 4))  # no repeats
    _, tokens = m(torch.randn(2, 3, 16, 32, 32), keep)
    assert tokens.shape[1] == 1 + 8 * 4 == num_tokens(SMALL, 16, 0.75)
    # the paper's layout: 1 + 8 x 49 = 393 tokens
    assert num_tokens(VideoViTConfig(), 16, 0.75) == 393
    assert sample_keep(3, 16, 0.0).tolist() == [list(range(16))] * 3


def test_masking_keeps_the_chosen_patches():
    m = VideoViT(SMALL).eval()
    video = torch.randn(1, 3, 16, 32, 32)
    keep = _keep(1, 8, 16, 0.5)
    full = m.embed(video)  # (1, 8, 16, W)
    picked = torch.gather(full, 2, keep[..., None].expand(-1, -1, -1, 48))
    # without blocks or norm, the tokens out are the tokens the blocks would see
    m.blocks = torch.nn.ModuleList()
    m.norm = torch.nn.Identity()
    _, tokens = m(video, keep)
    # (the kept patches are embedded alone: the same tokens to rounding)
    assert torch.allclose(tokens[:, 1:], picked.reshape(1, -1, 48), atol=1e-5)


def test_position_tables_slice_for_short_clips():
    m = VideoViT(SMALL).eval()
    with torch.no_grad():
        m.pos_embed_temporal.copy_(torch.randn_like(m.pos_embed_temporal))
        m.patch_embed.proj.weight.zero_()
        m.patch_embed.proj.bias.zero_()
    x4 = m.embed(torch.zeros(1, 3, 4, 32, 32))
    expected = m.pos_embed_spatial[:, 1:, None] + m.pos_embed_temporal[:, None, :2]
    assert torch.allclose(x4, expected.permute(0, 2, 1, 3))
    x1 = m.embed(torch.zeros(1, 3, 1, 32, 32))
    assert torch.allclose(x1[:, 0], m.pos_embed_spatial[:, 1:] + m.pos_embed_temporal[:, :1])
    with pytest.raises(ValueError, match="at most 8"):
        m.embed(torch.zeros(1, 3, 18, 32, 32))


def test_temporal_table_starts_at_zero():
    assert torch.count_nonzero(VideoViT(SMALL).pos_embed_temporal) == 0


def test_drop_path_and_checkpointing_options():
    cfg = VideoViTConfig(**{**SMALL.__dict__, "drop_path": 0.2})
    m = VideoViT(cfg, grad_checkpointing=True).train()
    assert m.blocks[-1].drop_path1.drop_prob == pytest.approx(0.2)
    x = torch.randn(2, 3, 4, 32, 32)
    torch.manual_seed(1)
    m(x)[0].sum().backward()
    g_ckpt = m.patch_embed.proj.weight.grad.clone()
    m.zero_grad()
    m.grad_checkpointing = False
    torch.manual_seed(1)
    m(x)[0].sum().backward()
    assert torch.allclose(g_ckpt, m.patch_embed.proj.weight.grad, atol=1e-6)


def test_save_load_reproduces_outputs_exactly(tmp_path):
    m = VideoViT(SMALL).eval()
    m.save_pretrained(tmp_path / "enc")
    assert {p.name for p in (tmp_path / "enc").iterdir()} == {"model.safetensors",
                                                              "config.json"}
    loaded = VideoViT.from_pretrained(tmp_path / "enc").eval()
    x, keep = torch.randn(2, 3, 16, 32, 32), _keep(2, 8, 16, 0.5)
    assert torch.equal(m(x, keep)[1], loaded(x, keep)[1])


# ---------------------------------------------------------------- image weights
def _timm_vit(grid: int = 4, class_token: bool = True):
    return timm.create_model("vit_base_patch16_224", pretrained=False, img_size=grid * 8,
                             patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5,
                             class_token=class_token, global_pool="token" if class_token else
                             "avg").eval()


def test_timm_checkpoint_loads_and_static_clip_matches_the_image_model(tmp_path):
    vit = _timm_vit()
    path = tmp_path / "timm.pth"
    torch.save(vit.state_dict(), path)
    m = VideoViT(VideoViTConfig(**{**SMALL.__dict__, "num_frames": 2})).eval()
    report = load_image_vit(m, path)
    assert "patch_embed.proj.weight" in report.inflated
    assert report.missing == ["pos_embed_temporal"] and not report.unexpected
    assert set(report.ignored) == {"head.weight", "head.bias"}
    image = torch.randn(1, 3, 32, 32)
    static = image[:, :, None].repeat(1, 1, 2, 1, 1)
    with torch.no_grad():
        ours = m(static)[1]
        theirs = vit.forward_features(image)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_mae_checkpoint_format_with_decoder_and_grid_resize(tmp_path):
    vit = _timm_vit(grid=2)  # 16 px images: the position table must be resized to 4x4
    sd = {**vit.state_dict(), "mask_token": torch.zeros(1, 1, 48),
          "decoder_embed.weight": torch.zeros(8, 48)}
    del sd["head.weight"], sd["head.bias"]
    torch.save({"model": sd, "epoch": 800}, tmp_path / "mae.pth")
    m = VideoViT(SMALL)
    report = load_image_vit(m, tmp_path / "mae.pth")
    assert report.resized == ["pos_embed"]
    assert {"mask_token", "decoder_embed.weight"} == set(report.ignored)
    assert m.pos_embed_spatial.shape == (1, 17, 48)
    assert torch.equal(m.pos_embed_spatial[:, 0], vit.pos_embed[:, 0])
    assert torch.equal(m.blocks[1].attn.qkv.weight, vit.blocks[1].attn.qkv.weight)


def test_video_init_scratch_builds_random_weights_and_a_path_loads_them(tmp_path):
    from tvts.models.factory import build_video_encoder

    micro = {"profile": "micro"}
    scratch = build_video_encoder(resolve({**micro, "model": {"video": {"init": "scratch"}}}))
    default = build_video_encoder(resolve(micro))
    assert type(scratch) is type(default)
    save_file(scratch.state_dict(), tmp_path / "w.safetensors")
    loaded = build_video_encoder(resolve(
        {**micro, "model": {"video": {"init": str(tmp_path / "w.safetensors")}}}))
    assert torch.equal(loaded.blocks[0].attn.qkv.weight, scratch.blocks[0].attn.qkv.weight)


def test_mismatch_that_matters_is_an_error(tmp_path):
    vit = _timm_vit()
    m = VideoViT(VideoViTConfig(**{**SMALL.__dict__, "depth": 3}))
    with pytest.raises(ValueError, match=r"blocks\.2"):
        load_image_vit(m, vit.state_dict())
    wide = VideoViT(VideoViTConfig(**{**SMALL.__dict__, "width": 96, "heads": 3}))
    with pytest.raises(ValueError, match="does not fit"):
        load_image_vit(wide, vit.state_dict())
    sd = {**vit.state_dict(), "blocks.0.attn.extra": torch.zeros(3)}
    with pytest.raises(ValueError, match="unexpected"):
        load_image_vit(VideoViT(SMALL), sd)


# ---------------------------------------------------------------- text encoder
def test_bundled_minilm_resolves_offline():
    enc = TextEncoder("bundled:minilm-l6").eval()
    tok = load_tokenizer("bundled:minilm-l6")
    batch = tok(["the red circle moves up", "the blue square grows"], padding=True,
                return_tensors="pt")
    with torch.no_grad():
        feats = enc(batch["input_ids"], batch["attention_mask"])
    assert feats.shape == (2, 384) and enc.dim == 384
    assert not torch.allclose(feats[0], feats[1])


def test_local_path_and_unreachable_hub_name(tmp_path, monkeypatch):
    from transformers import BertConfig, BertModel

    tiny = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32))
    tiny.save_pretrained(tmp_path / "tiny")
    assert TextEncoder(str(tmp_path / "tiny")).dim == 16
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match=r"model.text.name = 'org/not-cached'.*set model.text"):
        TextEncoder("org/not-cached")
    with pytest.raises(UserError, match="unknown bundled model"):
        resolve_text_model("bundled:nope")


# ---------------------------------------------------------------- sorter
@pytest.mark.parametrize("modeling", ["kway", "pairwise"])
def test_sorter_is_equivariant_to_transcript_order(modeling):
    s = SortTransformer(48, 3, 2, 4, modeling, text_dim=32).eval()
    video, text = torch.randn(2, 9, 48), torch.randn(2, 4, 32)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        base, permuted = s(video, text), s(video, text[:, perm])
    if modeling == "kway":
        assert torch.allclose(permuted, base[:, perm], atol=1e-5)
    else:
        assert torch.allclose(permuted, base[:, perm][:, :, perm], atol=1e-5)


@pytest.mark.parametrize("time_embedding", ["none", "sincos"])
def test_only_the_time_embedding_tells_the_sorter_when_a_slice_is(time_embedding):
    s = SortTransformer(48, 3, 2, 4, "kway", text_dim=32, time_embedding=time_embedding,
                        slices=4).eval()
    video, text = torch.randn(2, 1 + 4 * 3, 48), torch.randn(2, 4, 32)
    swapped = video.clone()
    swapped[:, 1:4], swapped[:, 4:7] = video[:, 4:7], video[:, 1:4]  # slices 0 and 1 trade
    with torch.no_grad():
        same = torch.allclose(s(video, text), s(swapped, text), atol=1e-5)
    assert same == (time_embedding == "none")
    if time_embedding == "sincos":
        with pytest.raises(ValueError, match="do not split into 4 slices"):
            s(torch.randn(1, 1 + 4 * 3 + 1, 48), text[:1])


def test_factorial_head_shape():
    s = SortTransformer(48, 3, 1, 4, "factorial", text_dim=48)
    assert s(torch.randn(2, 5, 48), torch.randn(2, 4, 48)).shape == (2, 24)


# ---------------------------------------------------------------- the TVTS model
@pytest.fixture(scope="module")
def micro_model_inputs():
    p = micro()
    tok = load_tokenizer(p.model.text.name)
    b, k = 3, p.data.num_transcripts
    enc = tok([f"the red circle moves {w}" for w in ("up", "down", "left")] * k,
              padding="max_length", max_length=10, return_tensors="pt")
    ids, mask = enc["input_ids"].reshape(b, k, -1), enc["attention_mask"].reshape(b, k, -1)
    order = torch.stack([torch.randperm(k) for _ in range(b)])
    cfg = video_config(p)
    video = torch.randn(b, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    keep = _keep(b, cfg.num_slices, cfg.grid**2, p.data.mask_ratio)
    return p, (video, ids, mask, order, keep)


def test_frozen_text_encoder_gets_no_gradient(micro_model_inputs):
    p, inputs = micro_model_inputs
    model = build_tvts(p)  # the demo and micro profiles freeze the text encoder
    assert p.model.text.freeze
    model(*inputs)["loss"].backward()
    text_grad, video_grad = _grad_norms(model)
    assert text_grad == 0 and video_grad > 0
    assert all(not q.requires_grad for q in model.text.parameters())


def _grad_norms(model) -> tuple[float, float]:
    def norm(module):
        return sum(float(q.grad.abs().sum()) for q in module.parameters() if q.grad is not None)
    return norm(model.text), norm(model.video)


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_of_the_sort_loss(micro_model_inputs, stop_gradient):
    p, inputs = micro_model_inputs
    text = p.model.text.model_copy(update={"freeze": False})
    p = p.model_copy(update={
        "sort": p.sort.model_copy(update={"stop_gradient": stop_gradient}),
        "model": p.model.model_copy(update={"text": text})})
    model = build_tvts(p)
    model(*inputs)["loss_sort"].backward()
    text_grad, video_grad = _grad_norms(model)
    assert video_grad > 0
    assert (text_grad == 0) == stop_gradient


def test_loss_is_base_plus_lambda_sort(micro_model_inputs):
    p, inputs = micro_model_inputs
    for lam, contrastive in [(2.0, True), (0.5, True), (1.0, False)]:
        q = p.model_copy(update={
            "sort": p.sort.model_copy(update={"lambda_": lam}),
            "contrastive": p.contrastive.model_copy(update={"enabled": contrastive})})
        torch.manual_seed(0)
        out = build_tvts(q)(*inputs)
        assert (out["loss_contrastive"] > 0) == contrastive
        assert torch.allclose(out["loss"], out["loss_contrastive"] + lam * out["loss_sort"])
        assert 0 <= float(out["sort_seq_acc"]) <= float(out["sort_acc"]) <= 1


def test_temporal_table_init_option():
    cfg = VideoViTConfig(**{**SMALL.__dict__, "temporal_init": "normal"})
    table = VideoViT(cfg).pos_embed_temporal.detach()
    assert torch.count_nonzero(table) == table.numel() and float(table.std()) < 0.05


def test_mean_pooling_ignores_padding():
    enc = TextEncoder("bundled:minilm-l6", pooling="mean").eval()
    tok = load_tokenizer("bundled:minilm-l6")
    alone = tok(["the red circle"], return_tensors="pt")
    padded = tok(["the red circle", "the blue square moves to the left now"], padding=True,
                 return_tensors="pt")
    with torch.no_grad():
        a = enc(alone["input_ids"], alone["attention_mask"])[0]
        b = enc(padded["input_ids"], padded["attention_mask"])[0]
        cls = TextEncoder("bundled:minilm-l6").eval()(alone["input_ids"],
                                                      alone["attention_mask"])[0]
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(a, cls, atol=1e-3)
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder("bundled:minilm-l6", pooling="max")


@pytest.mark.parametrize("local", ["./models/minilm", "/no/such/folder", "~/nope/model",
                                   "a/b/c", "models\\minilm"])
def test_a_local_looking_path_that_does_not_exist_fails_at_once(local, monkeypatch):
    import huggingface_hub

    def no_hub(*args, **kwargs):
        raise AssertionError("a local path was sent to the hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=r"model\.text\.name = .*: no such folder"):
        TextEncoder(local)
    assert time.perf_counter() - t0 < 2.0  # no retries against the hub


def test_an_incomplete_local_folder_names_the_key_and_what_is_missing(tmp_path):
    from transformers import BertConfig, BertModel

    tiny = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                num_attention_heads=2, intermediate_size=32))
    tiny.save_pretrained(tmp_path / "tiny")
    (tmp_path / "tiny" / "model.safetensors").unlink()
    with pytest.raises(UserError, match=r"model\.text\.name = .*incomplete: no "
                                        r"model\.safetensors or pytorch_model\.bin"):
        TextEncoder(str(tmp_path / "tiny"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"incomplete: no config\.json"):
        TextEncoder(str(tmp_path / "empty"))
    (tmp_path / "empty" / "config.json").write_text('{"model_type": "not-a-model"}')
    (tmp_path / "empty" / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match=r"does not load as AutoModel"):
        TextEncoder(str(tmp_path / "empty"))


# ---------------------------------------------------------------- speed levers, same math
def test_embedding_only_the_kept_patches_gives_the_tokens_and_gradients_of_embed_then_drop():
    cfg = VideoViTConfig(**{**SMALL.__dict__, "temporal_init": "normal"})
    video = torch.randn(2, 3, 16, 32, 32)
    keep = _keep(2, 8, 16, 0.75)
    outs, grads = [], []
    for before in (True, False):
        torch.manual_seed(0)
        m = VideoViT(cfg, drop_before_embed=before).train()
        _, tokens = m(video, keep)
        tokens.square().sum().backward()
        outs.append(tokens)
        grads.append([m.patch_embed.proj.weight.grad, m.patch_embed.proj.bias.grad,
                      m.pos_embed_spatial.grad, m.pos_embed_temporal.grad])
    assert torch.allclose(outs[0], outs[1], atol=1e-5)
    for ours, theirs in zip(*grads, strict=True):
        assert torch.allclose(ours, theirs, atol=1e-4, rtol=1e-4)
    # the kept tokens are the chosen patches, in slice order, not any others
    m = VideoViT(cfg).eval()
    full = m.embed(video)
    picked = m.embed_kept(video, keep)
    assert torch.allclose(picked[1, 3], full[1, 3, keep[1, 3]], atol=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        m.embed_kept(video, keep[:, :4])


def test_fused_and_explicit_attention_compute_the_same_model():
    from tvts.models.attention import set_fused_attention

    params = micro()
    model = build_tvts(params).eval()
    video = torch.randn(2, 3, 4, 32, 32)
    ids = torch.randint(1000, 5000, (2, 4, 7))
    mask = torch.ones_like(ids)
    mask[:, :, 5:] = 0  # padded transcripts: the explicit path must mask them too
    order = torch.stack([torch.randperm(4) for _ in range(2)])
    keep = _keep(2, 2, 16, 0.5)
    with torch.no_grad():
        fused = model(video, ids, mask, order, keep, gather=False)
        # 4 (or more) timm attention layers in the video encoder and sorter + the text model
        assert set_fused_attention(model, False) >= params.model.video.depth + 2 + 1
        assert model.text.model.config._attn_implementation == "eager"
        assert not model.video.blocks[0].attn.fused_attn
        explicit = model(video, ids, mask, order, keep, gather=False)
    for key in ("loss", "video_vec", "text_vec"):
        assert torch.allclose(fused[key], explicit[key], atol=1e-5), key


def test_the_global_text_vector_is_the_projected_mean_of_the_transcripts():
    params = micro()
    model = build_tvts(params).eval()
    ids = torch.randint(1000, 5000, (2, 4, 7))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 4, 32, 32), ids, mask, gather=False)
        cls = model.encode_text(ids, mask)  # (B, K, Dt)
        mean_then_project = model.proj.text(cls.mean(1))
        project_then_mean = model.proj.text(cls).mean(1)
    assert torch.allclose(out["text_vec"], mean_then_project, atol=1e-6)
    # the two orders differ (the projection starts with a ReLU): the test can tell them apart
    assert not torch.allclose(mean_then_project, project_then_mean, atol=1e-4)


def test_sincos_position_init_codes_where_and_when():
    from tvts.models.position import sincos_grid, sincos_table

    cfg = VideoViTConfig(**{**SMALL.__dict__, "position_init": "sincos"})
    m = VideoViT(cfg)
    g, w = cfg.grid, cfg.width
    spatial = m.pos_embed_spatial[0].detach()
    assert torch.equal(spatial[0], torch.zeros(w))  # the [CLS] row
    # patch (r, c): the row's code in the first half, the column's in the second
    r, c = 1, 2
    assert torch.allclose(spatial[1 + r * g + c, : w // 2], sincos_table(g, w // 2)[r])
    assert torch.allclose(spatial[1 + r * g + c, w // 2:], sincos_table(g, w - w // 2)[c])
    assert torch.equal(spatial[1:], sincos_grid(g, w))
    assert torch.equal(m.pos_embed_temporal[0].detach(), sincos_table(cfg.num_slices, w))
    # distinct positions get distinct codes of amplitude ~1, unlike the tiny normal tables
    assert len({tuple(row.tolist()) for row in spatial[1:]}) == g * g
    assert float(spatial[1:].abs().max()) == pytest.approx(1.0, abs=1e-6)
    normal = VideoViT(VideoViTConfig(**{**SMALL.__dict__, "position_init": "normal"}))
    assert float(normal.pos_embed_spatial.abs().max()) < 0.1
    assert float(normal.pos_embed_temporal.abs().max()) == 0.0


def test_a_frozen_text_encoder_encodes_each_transcript_once_whatever_its_batch():
    from tvts.models.text_encoder import TextEncoder, load_tokenizer

    tok = load_tokenizer("bundled:minilm-l6")
    frozen = TextEncoder("bundled:minilm-l6", freeze=True, pooling="mean").eval()
    batch = tok(["it moves up", "the red circle grows and then it shrinks", "it moves up"],
                padding=True, return_tensors="pt")
    got = frozen(batch["input_ids"], batch["attention_mask"])
    frozen_ref = TextEncoder("bundled:minilm-l6", freeze=True, pooling="mean").eval()
    frozen_ref._cache = None  # the plain batched computation
    torch.testing.assert_close(got, frozen_ref(batch["input_ids"], batch["attention_mask"]),
                               atol=1e-5, rtol=1e-5)
    assert len(frozen._cache) == 2  # two distinct transcripts
    # the same transcript in another batch (other padding): the cached value, not recomputed
    frozen.model.forward = lambda *a, **k: pytest.fail("encoded again")
    other = tok(["it moves up", "a much longer transcript than the others, padded"][:1],
                return_tensors="pt")
    assert torch.equal(frozen(other["input_ids"], other["attention_mask"])[0], got[0])
    # trained (not frozen): no cache, the gradient flows
    trained = TextEncoder("bundled:minilm-l6", freeze=False, pooling="mean")
    assert trained._cache is None
    trained(batch["input_ids"], batch["attention_mask"]).sum().backward()
    assert trained.model.embeddings.word_embeddings.weight.grad is not None
