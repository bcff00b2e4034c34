"""The trainer: exact resume, DDP equals single process, checkpoints, schedules, stages."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import polars as pl
import pytest
import torch
import torch.multiprocessing as mp
import yaml

from tvts.errors import UserError
from tvts.stages import corpus as corpus_stage
from tvts.stages import pack as pack_stage
from tvts.stages import post_pretrain as post_stage
from tvts.stages import pretrain as pretrain_stage
from tvts.tables import frame, read_table, write_table
from tvts.train.checkpoint import BEST, load_checkpoint
from tvts.train.sampler import ResumableSampler
from tvts.train.schedule import lr_at
from tvts.video.decoders import open_video  # noqa: F401  (decoders import cleanly)

from .conftest import free_port, micro, stage_record


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The micro demo corpus with its script's words as the words table (no ASR needed)."""
    root = tmp_path_factory.mktemp("train")
    params = micro()
    corpus_stage.run(params, root / "corpus", root / "corpus.json")
    videos = read_table(root / "corpus" / "videos.parquet", "videos")
    rows = []
    for v in videos.iter_rows(named=True):
        side = json.loads(Path(v["uri"]).with_suffix(".json").read_text())
        said = [w for s in side["segments"] if s["kind"] == "event" for w in s["speech"]["words"]]
        rows += [{"video_id": v["video_id"], "idx": i, "word": w["word"], "start_s": w["start_s"],
                  "end_s": w["end_s"], "confidence": 1.0} for i, w in enumerate(said)]
    write_table(frame(rows, "words"), root / "words.parquet", "words")
    write_table(videos.with_columns(pl.lit("train").alias("split")), root / "videos.parquet",
                "videos")
    # the micro profile trains from packed frames, as the pipeline does
    pack_stage.run(params, root / "videos.parquet", root / "pack", root / "pack.json")
    return root


def _params(**pretrain):
    # constant lr 1e-4: the weight comparison's tolerance is a fraction of it; fp32: the
    # comparisons' tolerances are fp32 rounding (auto is bf16 on a CPU with bf16 units)
    return micro({"model": {"text": {"dropout": False}},
                    "pretrain": {"loader_workers": 0, "epochs": 2, "lr": 1e-4,
                                 "precision": "fp32",
                                 "schedule": "step", "lr_milestones": [],
                                 "warmup_epochs": 0.0, **pretrain}})


def _pretrain(root: Path, out: str, params, max_steps=None) -> str:
    return pretrain_stage.run(params, root / "videos.parquet", root / "words.parquet",
                              root / out, root / f"{out}.json", None, max_steps,
                              pack_dir=root / "pack")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


# training that draws random numbers: text dropout (the text encoder trained) and drop path
RANDOM_TRAINING = {"text": {"freeze": False, "dropout": True}, "video": {"drop_path": 0.2}}


@pytest.mark.slow
def test_resume_is_exact(corpus):
    # stop mid-epoch 2 (step 7 of 4 per epoch), resume, and go to step 9, through an epoch
    # end with its validation; dropout and drop path draw from the restored random state
    params = micro({"model": RANDOM_TRAINING,
                      "pretrain": {"loader_workers": 1, "epochs": 3}})
    _pretrain(corpus, "straight", params, max_steps=9)
    _pretrain(corpus, "resumed", params, max_steps=7)
    assert (corpus / "resumed/checkpoints/step-0000007.pt").exists()
    _pretrain(corpus, "resumed", params, max_steps=9)
    a = _weights(corpus / "straight/checkpoints/step-0000009.pt")
    b = _weights(corpus / "resumed/checkpoints/step-0000009.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    full = load_checkpoint(corpus / "resumed/checkpoints/step-0000009.pt")
    assert full["optimizer"]["state"] and full["step"] == 9


def _ddp_resume_worker(rank: int, world: int, ports: list[int], root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    root_ = Path(root)
    params = micro({"model": RANDOM_TRAINING,
                      "pretrain": {"loader_workers": 0, "epochs": 2}})
    runs = (("ddp_straight", 4), ("ddp_resumed", 1), ("ddp_resumed", 4))
    for (out, steps), port in zip(runs, ports, strict=True):
        # a port per run: on one port a fast rank can reach the previous run's store before
        # rank 0 has torn it down, and both then wait in the rendezvous forever
        os.environ["MASTER_PORT"] = str(port)
        pretrain_stage.run(params, root_ / "videos.parquet", root_ / "words.parquet",
                           root_ / out, root_ / f"{out}.json", None, steps,
                           pack_dir=root_ / "pack")
        # each process's random state after the run, to compare across ranks
        torch.save(torch.get_rng_state(), root_ / f"{out}.rng{rank}")


@pytest.mark.slow
def test_two_process_resume_is_exact_and_ranks_draw_their_own_dropout(corpus):
    ports = [free_port() for _ in range(3)]
    mp.spawn(_ddp_resume_worker, args=(2, ports, str(corpus)), nprocs=2, join=True)
    a = _weights(corpus / "ddp_straight/checkpoints/step-0000004.pt")
    b = _weights(corpus / "ddp_resumed/checkpoints/step-0000004.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # each rank saved its own state: rank 1 resumed with its stream, not rank 0's
    saved = load_checkpoint(corpus / "ddp_resumed/checkpoints/step-0000004.pt")["rng"]
    assert len(saved) == 2 and not torch.equal(saved[0]["torch"], saved[1]["torch"])
    rng0 = torch.load(corpus / "ddp_straight.rng0", weights_only=True)
    rng1 = torch.load(corpus / "ddp_straight.rng1", weights_only=True)
    assert not torch.equal(rng0, rng1)  # dropout differs across processes


class _Squares(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict:
        return {"video": torch.full((1,), float(i + 1))}


class _CountingTask:
    def __init__(self) -> None:
        self.calls = 0
        self.val_batches: list[int] = []

    def loss(self, model, batch, world):  # type: ignore[no-untyped-def]
        self.calls += 1
        return {"loss": (model(batch["video"]) ** 2).mean()}

    def validate(self, model, loader, device):  # type: ignore[no-untyped-def]
        self.val_batches += [len(b["video"]) for b in loader]
        return {"val/loss": 0.0}


def test_an_epoch_holds_whole_optimiser_steps(tmp_path):
    """6 items in micro-batches of 2, 2 micro-batches a step: the third micro-batch would be
    back-propagated, never stepped, and added to the next epoch's first gradient."""
    from torch.utils.data import default_collate

    from tvts.config import PretrainConfig
    from tvts.train.distributed import Dist
    from tvts.train.loop import Trainer

    torch.manual_seed(0)
    model = torch.nn.Linear(1, 1)
    task = _CountingTask()
    cfg = PretrainConfig(epochs=2, batch_size=4, micro_batch=2, loader_workers=0, lr=0.1,
                         schedule="step", lr_milestones=[], warmup_epochs=0.0)
    trainer = Trainer(model, task, cfg, _Squares(), _Squares(), default_collate, tmp_path,
                      Dist(0, 1, 0, torch.device("cpu")), 0, {}, "val/loss", "min")
    result = trainer.fit()
    assert result.steps == 2 and task.calls == 4  # 2 steps of 2 micro-batches, per epoch 1
    # validation in batches of a micro-batch's clips (post-pretraining's training items are
    # whole groups: batches of one "item" left its contrastive loss without negatives)
    assert task.val_batches == [2, 2, 2] * 2
    assert all(p.grad is None for p in model.parameters())  # nothing left accumulated
    sampler = ResumableSampler(7, 1, seed=0, steps_of=3)
    assert sampler.batches_per_epoch() == 6 and len(list(sampler)) == 6


def _curves(live: Path) -> dict[str, list[tuple[str, str]]]:
    """Every logged curve but the timings: (step, value) rows by metric."""
    out = {}
    for tsv in sorted((live / "plots" / "metrics").rglob("*.tsv")):
        if tsv.stem in ("clips_per_s", "data_wait_share"):
            continue
        rows = tsv.read_text().splitlines()[1:]
        out[tsv.relative_to(live).as_posix()] = [tuple(r.split("\t")) for r in rows]
    return out


@pytest.mark.slow
def test_resumed_run_logs_the_curves_and_summary_of_an_uninterrupted_one(corpus):
    # 3 epochs of n steps. The interrupted run logs step n + 2 (and epoch 1's validation),
    # then dies before its checkpoint: the bookkeeping is cut back to epoch 1's checkpoint
    # validation masked as training is (a param; unmasked by default), the same after resume
    params = micro({"pretrain": {"loader_workers": 0, "epochs": 3,
                                                       "keep_checkpoints": 2,
                                                       "val_mask_ratio": 0.5}})

    def run(out: str, max_steps=None) -> str:
        return pretrain_stage.run(params, corpus / "videos.parquet", corpus / "words.parquet",
                                  corpus / out, corpus / f"{out}.json", corpus / f"{out}_live",
                                  max_steps, corpus / f"{out}_report", corpus / "pack")

    straight = run("whole")
    n = len(_curves(corpus / "whole_live")["plots/metrics/train/loss.tsv"]) // 3
    run("cut", max_steps=n + 2)
    ckpts = corpus / "cut" / "checkpoints"
    state = json.loads((ckpts / "checkpoints.json").read_text())
    assert state["history"][-2:] == ["epoch-001.pt", f"step-{n + 2:07d}.pt"]
    (ckpts / state["history"].pop()).unlink()
    (ckpts / "checkpoints.json").write_text(json.dumps(state))
    resumed = run("cut")
    whole, cut = _curves(corpus / "whole_live"), _curves(corpus / "cut_live")
    assert whole.keys() == cut.keys() and "plots/metrics/val/sort_acc.tsv" in whole
    for name in whole:
        assert [r[0] for r in cut[name]] == [r[0] for r in whole[name]], name  # the steps
        assert cut[name] == whole[name], name
    assert [r[0] for r in whole["plots/metrics/train/loss.tsv"]] == [str(i) for i in range(3 * n)]
    val_steps = [r[0] for r in whole["plots/metrics/val/sort_acc.tsv"]]
    assert val_steps == [str(n * e) for e in (1, 2, 3)]
    accuracy = re.compile(r"held-out sort accuracy (\S+) -> (\S+) \(50% masked;")
    assert accuracy.search(resumed).groups() == accuracy.search(straight).groups()
    assert stage_record(corpus / "whole.json")["val_mask_ratio"] == 0.5
    # a finished run started again (a kill -9 between its final checkpoint and the metrics
    # write, then the documented resume command) reports the same figures
    headline, details = (corpus / "whole.json").read_text(), stage_record(corpus / "whole.json")
    again = run("whole")
    assert accuracy.search(again).groups() == accuracy.search(straight).groups()
    assert again.rsplit(";", 1)[0] == straight.rsplit(";", 1)[0]  # all but the seconds
    assert (corpus / "whole.json").read_text() == headline
    assert stage_record(corpus / "whole.json") == details


def _launched(params, root: Path, out: str, tmp: Path, **kwargs):
    """The pretrain stage in two gloo processes started by its own launch (launch.nproc_per_node
    = 2), on the corpus under `root`."""
    from tvts.train.launch import launch

    two = params.model_copy(update={"launch": params.launch.model_copy(
        update={"nproc_per_node": 2})})
    params_file = tmp / f"{out}-params.yaml"
    params_file.write_text(yaml.safe_dump(two.to_dict()))
    return launch("pretrain", str(params_file), two.launch, {
        "videos_path": root / "videos.parquet", "words_path": root / "words.parquet",
        "out_dir": root / out, "metrics_path": root / f"{out}.json",
        "live_dir": root / f"{out}_live", "report_dir": root / f"{out}_report",
        "pack_dir": root / "pack", **kwargs})


def _logged(live: Path, name: str) -> list[float]:
    rows = (live / "plots" / "metrics" / "train" / f"{name}.tsv").read_text().splitlines()[1:]
    return [float(r.split("\t")[-1]) for r in rows]


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(corpus, tmp_path):
    """The stage launched in two processes by itself (launch.nproc_per_node = 2: torch's
    elastic launcher, gloo) trains as one process does on the same global batch."""
    torch.set_num_threads(1)
    pretrain_stage.run(_params(), corpus / "videos.parquet", corpus / "words.parquet",
                       corpus / "single", corpus / "single.json", corpus / "single_live", 2,
                       corpus / "single_report", corpus / "pack")
    summary = _launched(_params(), corpus, "ddp", tmp_path, max_steps=2)
    assert summary == "pretrain: stopped after 2 steps (resume continues)"  # rank 0's
    # each process kept its own random state in the checkpoint: two of them ran
    assert len(load_checkpoint(corpus / "ddp/checkpoints/step-0000002.pt")["rng"]) == 2
    # the same loss and the same gradient (its norm, before the first update) on the same
    # global batch: the contrastive part would differ by the world size without its scaling
    for name in ("loss", "loss_contrastive", "loss_sort", "grad_norm"):
        single, ddp = _logged(corpus / "single_live", name), _logged(corpus / "ddp_live", name)
        assert single[0] == pytest.approx(ddp[0], rel=1e-5), name
    a = _weights(corpus / "single/checkpoints/step-0000002.pt")
    b = _weights(corpus / "ddp/checkpoints/step-0000002.pt")
    # after two AdamW steps: equal, except where the gradient is zero in exact arithmetic
    # (attention key biases: softmax ignores a shift shared by all keys). There Adam turns
    # float noise into steps of up to the lr each, so two runs may differ by 2 x 2 x lr.
    lr = _params().pretrain.lr
    for k in a:
        x, y = a[k], b[k]
        if k.endswith("attn.qkv.bias"):
            w = x.shape[0] // 3
            assert torch.allclose(x[w:2 * w], y[w:2 * w], atol=4 * lr + 1e-6), k
            x, y = torch.cat([x[:w], x[2 * w:]]), torch.cat([y[:w], y[2 * w:]])
        assert torch.allclose(x, y, atol=1e-4), k


@pytest.mark.slow
def test_a_launched_stage_fails_with_its_workers_message(corpus, tmp_path):
    from tvts.train.launch import should_launch

    params = _params()
    assert not should_launch("pretrain", params.launch)  # auto: one process on a CPU
    two = params.launch.model_copy(update={"nproc_per_node": 2})
    assert should_launch("pretrain", two) and not should_launch("evaluate", two)
    with pytest.raises(UserError, match=r"pretrain: a training process failed.*nowhere"):
        _launched(params, corpus, "failing", tmp_path,
                  videos_path=tmp_path / "nowhere.parquet")


@pytest.mark.slow
def test_a_submitted_stage_survives_preemption_and_reports_a_real_error(corpus, tmp_path):
    """launch.scheduler submitit-local: the stage runs as a submitit job (the Slurm path's
    requeue machinery, on this machine). Preempted once mid-run, the job is requeued and the
    stage resumes from its checkpoint; a job that fails for an error fails the stage with it."""
    from tvts.train.launch import launch, should_launch

    params = _params(checkpoint_every_steps=1)
    job_params = params.model_copy(update={"launch": params.launch.model_copy(update={
        "scheduler": "submitit-local", "nproc_per_node": 1,
        "slurm": params.launch.slurm.model_copy(update={"log_dir": str(tmp_path / "jobs"),
                                                         "max_requeues": 2})})})
    assert should_launch("pretrain", job_params.launch)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(job_params.to_dict()))
    out = tmp_path / "submitted"
    kwargs = {"videos_path": corpus / "videos.parquet", "words_path": corpus / "words.parquet",
              "out_dir": out, "metrics_path": tmp_path / "submitted.json", "live_dir": None,
              "report_dir": tmp_path / "report", "pack_dir": corpus / "pack"}
    preempted = []

    def preempt_after_a_checkpoint(job) -> None:
        deadline = time.time() + 300
        while not list((out / "checkpoints").glob("step-*.pt")):
            assert time.time() < deadline and not job.done(), "no checkpoint was written"
            time.sleep(0.2)
        # what Slurm sends a job's tasks before preempting it (submitit's USR2), sent to the
        # tasks the local executor's controller started
        controller = job._process.pid
        tasks = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
        for pid in tasks:
            os.kill(int(pid), signal.SIGUSR2)
        preempted.append(len(tasks))

    from tvts.train.submit import submit

    lines: list[str] = []
    summary = submit("pretrain", str(params_file), job_params.launch, kwargs, lines.append,
                     poll_s=0.5, on_submit=preempt_after_a_checkpoint)
    assert preempted and "held-out sort accuracy" in summary
    log = "\n".join(lines)
    assert "submitted job" in log
    logs = "".join(p.read_text() for p in (tmp_path / "jobs" / "pretrain").glob("*_log.*"))
    assert "this job is preempted" in logs and "Requeued job" in logs
    assert re.search(r"resumed from .*step-\d+\.pt \(step [1-9]", logs)  # not from scratch
    # the requeued stage resumed: its final weights are those of an uninterrupted job's (a
    # job too, so that both ran with the same threads: float sums depend on their number)
    whole = tmp_path / "uninterrupted"
    submit("pretrain", str(params_file), job_params.launch, {**kwargs, "out_dir": whole},
           lines.append, poll_s=0.5)
    a, b = _weights(out / "checkpoints" / BEST), _weights(whole / "checkpoints" / BEST)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a real error is not requeued: the stage fails with the job's message
    with pytest.raises(UserError, match=r"pretrain: job .* failed: .*nowhere"):
        launch("pretrain", str(params_file), job_params.launch,
               {**kwargs, "videos_path": tmp_path / "nowhere.parquet", "out_dir": tmp_path / "y"})


def test_corrupt_or_foreign_checkpoint_is_a_clear_error(corpus, tmp_path):
    params = _params()
    _pretrain(corpus, "ck", params, max_steps=1)
    good = corpus / "ck/checkpoints/step-0000001.pt"
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(UserError, match="corrupt or truncated"):
        load_checkpoint(cut)
    other = micro({"model": {"video": {"depth": 3}}})
    with pytest.raises(UserError, match=r"different model configuration.*model"):
        load_checkpoint(good, pretrain_stage.model_signature(other))
    # resuming into a different model fails the same way, before training anything
    with pytest.raises(UserError, match="different model configuration"):
        _pretrain(corpus, "ck", other)


def test_full_pretrain_then_post_pretrain(corpus):
    params = micro({"pretrain": {"loader_workers": 0}})
    summary = _pretrain(corpus, "run", params)
    assert "held-out sort accuracy" in summary and "(unmasked;" in summary
    out = corpus / "run"
    assert (out / "checkpoints" / BEST).exists()
    assert {"encoder", "text_encoder", "tvts.safetensors", "tvts.json"} <= {
        p.name for p in out.iterdir()}
    metrics = stage_record(corpus / "run.json")
    assert metrics["chance_sort_acc"] == 0.25 and "val_sort_acc" in metrics
    # defined only when a validation batch holds clips of two videos
    other = metrics.get("val_sort_acc_other_video")
    assert (other is not None) == (metrics["val_videos"] > 1)
    assert other is None or 0.0 <= other <= 1.0
    assert "with another clip's video" in summary
    from tvts.models.video_vit import VideoViT

    enc = VideoViT.from_pretrained(out / "encoder")  # no training code needed
    assert enc.cfg.width == params.model.video.width
    demo = corpus / "corpus" / "demo" / "downstream"
    post = post_stage.run(params, demo / "cc3m", demo / "webvid", out / "checkpoints" / BEST,
                          corpus / "post", corpus / "post.json", None)
    assert "post_pretrain:" in post
    assert (corpus / "post" / "encoder" / "model.safetensors").exists()
    assert json.loads((corpus / "post.json").read_text())["steps"] >= 1
    # the held-out R@1 comes with its gallery's chance (micro: 2 held-out clips)
    assert "over 2 clips (chance 50.0%)" in post
    assert stage_record(corpus / "post.json")["val_r1_chance"] == 50.0
    # after a pretraining without the contrastive loss (the M_sort ablation), post-pretraining
    # still trains with it: captions have nothing to sort (it had no loss at all before)
    no_base = micro({"pretrain": {"loader_workers": 0}, "contrastive": {"enabled": False}})
    post_stage.run(no_base, demo / "cc3m", demo / "webvid", out / "checkpoints" / BEST,
                   corpus / "post_sort_only", corpus / "post_sort_only.json", None)
    assert stage_record(corpus / "post_sort_only.json")["train_loss"] > 0


def test_sampler_batches_concatenate_to_the_single_process_batch():
    single = list(ResumableSampler(20, 4, seed=3))
    r0 = list(ResumableSampler(20, 2, seed=3, rank=0, world=2))
    r1 = list(ResumableSampler(20, 2, seed=3, rank=1, world=2))
    merged = [x for i in range(len(r0) // 2) for x in r0[2 * i : 2 * i + 2] + r1[2 * i : 2 * i + 2]]
    assert merged == single
    resumed = ResumableSampler(20, 4, seed=3)
    resumed.set_epoch(0, start_batch=2)
    assert list(resumed) == single[8:]


def test_schedules():
    assert lr_at(0.0, 1e-4, "step", 20, [12, 16]) == 1e-4
    assert lr_at(12.0, 1e-4, "step", 20, [12, 16]) == pytest.approx(1e-5)
    assert lr_at(16.5, 1e-4, "step", 20, [12, 16]) == pytest.approx(1e-6)
    assert lr_at(0.5, 1e-3, "cosine", 10, [], warmup_epochs=1) == pytest.approx(5e-4)
    assert lr_at(10.0, 1e-3, "cosine", 10, [], warmup_epochs=1) == pytest.approx(0.0)
    assert lr_at(5.5, 1e-3, "cosine", 10, [], warmup_epochs=1) == pytest.approx(5e-4)


def test_best_checkpoint_follows_the_monitored_direction(tmp_path):
    from tvts.train.checkpoint import CheckpointManager

    state = {"model": {"w": torch.zeros(1)}, "optimizer": {}, "rng": {}, "step": 1}
    up = CheckpointManager(tmp_path / "up", 1, "val/sort_acc", "max", {})
    for i, v in enumerate([0.3, 0.5, 0.4]):
        up.save({**state, "step": i}, f"e{i}.pt", v)
    assert up.best == 0.5 and torch.load(tmp_path / "up" / BEST, weights_only=True)["step"] == 1
    down = CheckpointManager(tmp_path / "down", 2, "val/loss", "min", {})
    for i, v in enumerate([0.3, 0.5, 0.2]):
        down.save({**state, "step": i}, f"e{i}.pt", v)
    assert down.best == 0.2 and down.history == ["e1.pt", "e2.pt"]
    assert not (tmp_path / "down" / "e0.pt").exists()


class _OrderFromTokens:
    """A stand-in sorter that reads each transcript's position off the video tokens."""

    modeling = "kway"

    def __call__(self, video_tokens, transcripts):
        return torch.nn.functional.one_hot(video_tokens, video_tokens.shape[1]).float()


def test_sort_accuracy_with_another_clips_video():
    from tvts.models.sort_controls import other_video_hits, other_video_rows

    assert other_video_rows(["a", "b", "b", "c"]).tolist() == [True, True, False, True]
    assert not other_video_rows(["a"]).any()  # a clip rolled onto itself
    orders = torch.tensor([[0, 1, 2], [0, 1, 2], [2, 1, 0], [1, 0, 2]])
    out = {"video_tokens": orders, "transcripts": torch.zeros(4, 3, 1)}
    batch = {"order": orders, "video_ids": ["a", "b", "b", "c"]}
    hits = other_video_hits(_OrderFromTokens(), out, batch)
    # rows a (gets c's tokens), b (gets a's), c (gets b's second clip); b's second clip is
    # left out: rolled, it sees its own video
    assert hits.tolist() == [[False, False, True], [True, True, True], [False, False, False]]
    same = {**batch, "video_ids": ["a"] * 4}
    assert other_video_hits(_OrderFromTokens(), out, same).shape == (0, 3)


def test_other_video_hits_on_the_real_model():
    from tvts.models.factory import build_tvts
    from tvts.models.sort_controls import other_video_hits

    params = micro()
    model = build_tvts(params).eval()
    d, k = params.data, params.data.num_transcripts
    b = 3
    batch = {"video": torch.randn(b, 3, d.num_frames, d.frame_size, d.frame_size),
             "input_ids": torch.randint(1000, 2000, (b, k, 5)),
             "attention_mask": torch.ones(b, k, 5, dtype=torch.long),
             "order": torch.stack([torch.randperm(k) for _ in range(b)]),
             "video_ids": ["a", "b", "b"]}
    with torch.no_grad():
        out = model(batch["video"], batch["input_ids"], batch["attention_mask"], batch["order"])
        hits = other_video_hits(model.sorter, out, batch)
        # the reused outputs stand for encoding the rolled clips afresh
        _, rolled_tokens = model.video(batch["video"].roll(1, 0))
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
        direct = model.sorter(rolled_tokens, text)
    assert torch.allclose(out["video_tokens"].roll(1, 0), rolled_tokens, atol=1e-5)
    assert hits.shape == (2, k) and hits.dtype == torch.bool
    assert torch.equal(hits, (direct.argmax(-1) == batch["order"])[[0, 1]])


def test_validation_retrieval_counts_a_clip_of_the_same_video_as_a_hit():
    from tvts.train.tasks import _retrieval

    # clips 0 and 1 are of video a: text 0's best match is clip 1, of its own video
    v = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    t = torch.tensor([[0.8, 0.2, 0.0], [0.8, 0.2, 0.0], [0.0, 1.0, 0.0], [0.0, 0.1, 1.0]])
    got = _retrieval([v], [t], ["a", "a", "b", "c"])
    assert got == {"val/r1_v2t": 100.0, "val/r1_t2v": 100.0, "val/r1_chance": 37.5}
    # other videos' clips are still misses
    wrong = _retrieval([v], [t.roll(1, 0)], ["a", "a", "b", "c"])
    assert wrong["val/r1_t2v"] < 100.0
    # a collapsed model (every vector equal) scores chance, not 100: ties are averaged
    flat = _retrieval([torch.ones(4, 3)], [torch.ones(4, 3)], ["a", "a", "b", "c"])
    assert flat["val/r1_t2v"] == pytest.approx(flat["val/r1_chance"])


def test_groups_alternate_modality_in_blocks_so_every_rank_draws_the_same_one():
    from tvts.data.captioned import AlternatingGroups

    class Kind(torch.utils.data.Dataset):
        def __init__(self, kind: str, n: int) -> None:
            self.kind, self.n = kind, n

        def __len__(self) -> int:
            return self.n

        def __getitem__(self, i: int) -> dict:
            return {"samples": [self.kind], "skipped": []}

    world = 2
    groups = AlternatingGroups([Kind("image", 12), Kind("clip", 12)], 2, seed=0, ranks=world)
    per_rank = [list(ResumableSampler(len(groups), 1, 0, r, world, shuffle=False))
                for r in range(world)]
    kinds = [[groups[i]["samples"][0] for i in ranks] for ranks in per_rank]
    assert kinds[0] == kinds[1]  # at every step, both ranks hold the same modality
    assert set(kinds[0]) == {"image", "clip"}  # and it alternates
    assert kinds[0][:2] == ["image", "clip"]


def _post_ddp_worker(rank: int, world: int, port: int, root: str, init: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    root_ = Path(root)
    params = micro({"post_pretrain": {"loader_workers": 0,
                                                            "batch_size": 2}})
    post_stage.run(params, root_ / "cc3m", root_ / "webvid", Path(init), root_ / "post_ddp",
                   root_ / "post_ddp.json", None)


@pytest.mark.slow
def test_two_process_post_pretraining_survives_clips_that_do_not_decode(corpus, tmp_path):
    params = micro({"pretrain": {"loader_workers": 0}})
    _pretrain(corpus, "for_post", params, max_steps=1)
    demo = corpus / "corpus" / "demo" / "downstream"
    shutil.copytree(demo / "cc3m", tmp_path / "cc3m")
    shutil.copytree(demo / "webvid", tmp_path / "webvid")
    from tvts.data.captioned import read_webvid

    items = read_webvid(tmp_path / "webvid")
    train = items[2:]  # what the stage trains on (micro's post_pretrain.val_clips validate)
    assert len(train) >= 3
    for item in train[:-1]:  # all but one: the epoch's draws meet them for sure
        Path(item.path).write_bytes(b"\x00not a video" * 50)
    ctx = mp.start_processes(_post_ddp_worker, nprocs=2, join=False, start_method="spawn",
                             args=(2, free_port(), str(tmp_path),
                                   str(corpus / "for_post" / "checkpoints" / "step-0000001.pt")))
    deadline = time.time() + 300  # a rank that shrank its batch hangs the all-gather
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("post-pretraining hung under DDP")
    metrics = json.loads((tmp_path / "post_ddp.json").read_text())
    assert metrics["steps"] >= 1


def test_checkpoints_are_chosen_on_validation_videos_and_never_see_the_test_ones(
        corpus, tmp_path, monkeypatch):
    videos = read_table(corpus / "videos.parquet", "videos")
    ids = sorted(videos["video_id"])
    split = {ids[0]: "val", ids[1]: "test"}
    table = tmp_path / "videos.parquet"
    write_table(videos.with_columns(pl.col("video_id").replace_strict(
        split, default="train").alias("split")), table, "videos")
    seen = {}
    real = pretrain_stage.Trainer

    def spy(model, task, cfg, train_set, val_set, *args, **kwargs):
        seen["train"] = {e.video_id for e in train_set.entries}
        seen["val"] = {e.video_id for e in val_set.entries}
        return real(model, task, cfg, train_set, val_set, *args, **kwargs)

    monkeypatch.setattr(pretrain_stage, "Trainer", spy)
    params = micro({"pretrain": {"loader_workers": 0}})
    pretrain_stage.run(params, table, corpus / "words.parquet", tmp_path / "run",
                       tmp_path / "run.json", None, 1, pack_dir=corpus / "pack")
    assert seen["val"] == {ids[0]}  # best.pt is chosen on these alone
    assert ids[1] not in seen["train"] | seen["val"]  # the test video is never seen
    assert seen["train"] == set(ids[2:])
