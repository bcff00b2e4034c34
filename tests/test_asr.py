"""ASR: CTranslate2 reader/converter, engines on real narration, corpus runs with resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from tvts.asr.convert import convert_ct2_dir, ct2_to_openai
from tvts.asr.corpus_run import Task, import_subtitles, tasks_for, to_tables, transcribe_corpus
from tvts.asr.ct2_format import CT2FormatError, read_ct2, write_ct2
from tvts.asr.engines import Word, cut_repeats, finish, load_engine
from tvts.asr.journal import ShardJournal
from tvts.asr.scoring import align, demo_reference, inside
from tvts.config import resolve
from tvts.errors import UserError
from tvts.sharding import shard_of
from tvts.tables import read_table
from tvts.video.audio import read_audio_float

from .conftest import REPO, make_video, stage_record


# ---------------------------------------------------------------- format and converter
@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A tiny random Whisper in Hugging Face form and its CTranslate2 conversion."""
    import ctranslate2
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    root = tmp_path_factory.mktemp("whisper")
    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=51864, num_mel_bins=80, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=2, decoder_attention_heads=2, d_model=32,
                        encoder_ffn_dim=128, decoder_ffn_dim=128)  # Whisper: 4 x width
    hf = WhisperForConditionalGeneration(cfg).eval()
    hf.save_pretrained(root / "hf")
    ctranslate2.converters.TransformersConverter(str(root / "hf")).convert(str(root / "ct2"))
    return hf, root / "ct2"


def test_ct2_reader_round_trip(tiny_whisper, tmp_path):
    _, ct2 = tiny_whisper
    model = read_ct2(ct2 / "model.bin")
    assert model.name == "WhisperSpec"
    assert model.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"
    write_ct2(tmp_path / "model.bin", model)
    assert (tmp_path / "model.bin").read_bytes() == (ct2 / "model.bin").read_bytes()
    (tmp_path / "cut.bin").write_bytes((ct2 / "model.bin").read_bytes()[:5000])
    with pytest.raises(CT2FormatError, match=r"truncated|unexpected end"):
        read_ct2(tmp_path / "cut.bin")


def test_converted_checkpoint_computes_what_the_original_computes(tiny_whisper, tmp_path):
    import whisper

    hf, ct2 = tiny_whisper
    path = convert_ct2_dir(ct2, tmp_path)
    assert convert_ct2_dir(ct2, tmp_path) == path  # converted once, then cached
    ours = whisper.load_model(str(path), device="cpu").eval()
    mel = torch.randn(1, 80, 3000)
    tokens = torch.tensor([[50257, 50362, 440, 2068, 1262]])
    with torch.no_grad():
        enc_ours = ours.encoder(mel)
        enc_ref = hf.model.encoder(mel).last_hidden_state
        logits_ours = ours.decoder(tokens, enc_ours)
        logits_ref = hf(input_features=mel, decoder_input_ids=tokens).logits
    assert torch.allclose(enc_ours, enc_ref, atol=1e-4)
    assert torch.allclose(logits_ours, logits_ref, atol=1e-3)


def test_converter_rejects_other_models(tiny_whisper):
    _, ct2 = tiny_whisper
    model = read_ct2(ct2 / "model.bin")
    model.name = "TransformerSpec"
    with pytest.raises(CT2FormatError, match="not a Whisper model"):
        ct2_to_openai(model)


# ---------------------------------------------------------------- word post-processing
def test_repetition_loops_are_cut():
    said = ["the", "red", "circle"] * 5 + ["grows"]
    words = [Word(w, i, i + 0.5, 0.9) for i, w in enumerate(said)]
    kept, cut = cut_repeats(words, max_repeats=2)
    assert [w.word for w in kept] == ["the", "red", "circle", "the", "red", "circle", "grows"]
    assert cut == 9


def test_words_outside_speech_are_dropped_and_punctuation_cleaned():
    cfg = resolve({}).asr
    raw = [Word(" Hello,", 0.1, 0.4, 0.9), Word("ghost.", 5.0, 5.3, 0.2),
           Word(" world!", 0.5, 0.9, 0.8), Word("...", 0.95, 1.0, 0.5)]
    out = finish(raw, [(0.0, 1.2)], cfg)
    assert [w.word for w in out.words] == ["Hello", "world"]
    assert out.dropped_outside_speech == 1


def test_words_stretched_over_silence_are_trimmed_to_the_speech():
    """Whisper's first word after silence starts where the silence starts (0.0 at the start
    of a file); its last one ends at the end of the window. Kept, trimmed to the speech; a
    word that only touches speech is still dropped."""
    cfg = resolve({}).asr
    speech = [(0.8, 2.5), (4.8, 6.5)]
    raw = [Word("the", 0.0, 1.04, 0.9), Word("green", 1.04, 1.3, 0.9),
           Word("left", 2.2, 4.0, 0.9), Word("um", 4.0, 4.85, 0.3), Word("the", 4.9, 5.1, 0.9)]
    out = finish(raw, speech, cfg)
    assert [(w.word, w.start_s, w.end_s) for w in out.words] == [
        ("the", 0.8, 1.04), ("green", 1.04, 1.3), ("left", 2.2, 2.5), ("the", 4.9, 5.1)]
    assert out.dropped_outside_speech == 1


def test_yt_temporal_words_get_capped_ends():
    rows = import_subtitles((("hello", 0.5), ("big", 0.9), ("world", 4.0)), 4.3, 1.0)
    assert rows == [["hello", 0.5, 0.9, None], ["big", 0.9, 1.9, None],
                    ["world", 4.0, 4.3, None]]


# ---------------------------------------------------------------- journal
def test_journal_skips_a_cut_record_and_repairs_before_appending(tmp_path):
    j = ShardJournal(tmp_path, 1, "fp")
    j.append({"video_id": "a", "status": "done"})
    with open(j.path(0), "ab") as f:
        f.write(b'{"video_id": "b", "status": "do')  # kill -9 in the middle of a write
    assert set(j.load()) == {"a"}
    j2 = ShardJournal(tmp_path, 1, "fp")
    j2.append({"video_id": "c", "status": "done"})
    assert set(j2.load()) == {"a", "c"}
    assert all(line.startswith(b"{") for line in j.path(0).read_bytes().splitlines())
    assert set(ShardJournal(tmp_path, 1, "other settings").load()) == set()


def test_shards_hold_many_videos():
    shards = {shard_of(f"v{i}", 8) for i in range(200)}
    assert shards == set(range(8))


# ---------------------------------------------------------------- real engines, real speech
@pytest.fixture(scope="module")
def micro_corpus(micro_params, micro_corpus_stage):
    return micro_params, micro_corpus_stage


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["whisper-timestamped", "faster-whisper"])
def test_bundled_tiny_en_transcribes_the_demo_narration(micro_corpus, engine):
    params, root = micro_corpus
    videos = read_table(root / "corpus" / "videos.parquet", "videos").sort("uri")
    cfg = params.asr.model_copy(update={"engine": engine})
    eng = load_engine(cfg)
    ref, hyp, invented = [], [], 0
    for row in videos.head(2).iter_rows(named=True):
        truth = demo_reference(json.loads(Path(row["uri"]).with_suffix(".json").read_text()))
        words = eng.transcribe(read_audio_float(row["uri"])).words
        ref += truth.words
        hyp += [w.word for w in words]
        invented += sum(inside(w.start_s, w.end_s, truth.pauses) for w in words)
    assert align(ref, hyp).wer <= 0.15
    assert truth.pauses and invented == 0


def test_silence_gives_no_words():
    eng = load_engine(resolve({"asr": {"engine": "faster-whisper"}}).asr)
    rng = np.random.default_rng(0)
    noise = (rng.normal(0, 0.002, 16000 * 8)).astype(np.float32)
    assert eng.transcribe(noise).words == []


def test_corpus_run_quarantines_and_imports(micro_corpus, tmp_path):
    params, root = micro_corpus
    good = read_table(root / "corpus" / "videos.parquet", "videos").sort("uri").head(1)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00garbage" * 100)
    silent = make_video(tmp_path / "silent.mp4", audio=False)
    extra = pl.DataFrame([
        {"video_id": "vcorrupt", "uri": str(corrupt), "duration_s": 2.0, "fps": 8.0,
         "width": 64, "height": 48, "has_audio": True, "source": "dir", "split": "train"},
        {"video_id": "vsilent", "uri": str(silent), "duration_s": 2.0, "fps": 8.0,
         "width": 64, "height": 48, "has_audio": False, "source": "dir", "split": "train"},
        {"video_id": "ytABC", "uri": str(silent), "duration_s": 2.0, "fps": 8.0,
         "width": 64, "height": 48, "has_audio": False, "source": "yt_temporal",
         "split": "train"},
    ], schema=good.schema)
    subs = pl.DataFrame({"video_id": ["ytABC", "ytABC"], "idx": [0, 1],
                         "word": ["hi", "there"], "start_s": [0.2, 0.6]},
                        schema=read_table(root / "corpus" / "subtitles.parquet",
                                          "subtitles").schema)
    cfg = params.asr.model_copy(update={"engine": "faster-whisper"})
    result = transcribe_corpus(tasks_for(pl.concat([good, extra]), subs), cfg, params.corpus.s3,
                               str(tmp_path / "cache"), tmp_path / "shards")
    words, quarantine, metrics = to_tables(result)
    reasons = dict(zip(quarantine["video_id"], quarantine["reason"], strict=True))
    assert reasons["vcorrupt"].startswith("audio unreadable")
    assert reasons["vsilent"].startswith("no audio track")
    assert set(reasons) == {"vcorrupt", "vsilent"}
    yt = words.filter(pl.col("video_id") == "ytABC")
    assert yt["word"].to_list() == ["hi", "there"] and yt["confidence"].is_null().all()
    assert words.filter(pl.col("video_id") == good["video_id"][0]).height >= 5
    assert (metrics["videos_done"], metrics["videos_skipped"], metrics["videos_failed"]) == (
        2, 1, 1)
    assert metrics["real_time_factor"] > 0 and metrics["overhead_share"] < 0.5


def _run_asr(root: Path, extra: str = "") -> subprocess.Popen:
    params = root / "params.yaml"
    params.write_text("profile: micro\nasr:\n  engine: faster-whisper\n" + extra)
    code = ("import sys; from pathlib import Path; from tvts.config import load_params; "
            "from tvts.stages import asr; "
            f"print(asr.run(load_params('{params}'), Path('{root}/corpus'), Path('{root}/asr'), "
            f"Path('{root}/asr.json')))")
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, "TQDM_DISABLE": "1"})


@pytest.mark.slow
def test_resume_after_kill_9_loses_and_duplicates_nothing(micro_corpus, tmp_path):
    _, root = micro_corpus
    work = tmp_path / "run"
    (work).mkdir()
    os.symlink(root / "corpus", work / "corpus")
    proc = _run_asr(work)
    shards = work / "asr" / "shards"
    deadline = time.time() + 120
    while time.time() < deadline:
        lines = sum(p.read_bytes().count(b"\n") for p in shards.glob("*.jsonl")) \
            if shards.exists() else 0
        if lines >= 1:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sum(p.read_bytes().count(b"\n") for p in shards.glob("*.jsonl"))
    assert finished >= 1
    out, _ = _run_asr(work).communicate(timeout=300)
    metrics = stage_record(work / "asr.json")
    videos = read_table(root / "corpus" / "videos.parquet", "videos")
    assert metrics["videos_resumed"] >= 1 and metrics["videos_done"] == videos.height
    words = read_table(work / "asr" / "words.parquet", "words")
    assert words.select("video_id", "idx").is_duplicated().sum() == 0

    clean = tmp_path / "clean"
    clean.mkdir()
    os.symlink(root / "corpus", clean / "corpus")
    _run_asr(clean).communicate(timeout=300)
    assert words.equals(read_table(clean / "asr" / "words.parquet", "words"))
    assert "resumed" in out


def test_a_second_run_on_one_journal_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from tvts.asr.journal import ShardJournal\n"
         f"j = ShardJournal({str(tmp_path)!r}, 4, 'fp')\n"
         "with j.lock([0, 2]):\n    print('held', flush=True); time.sleep(60)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        journal = ShardJournal(tmp_path, 4, "fp")
        refused = rf"shard-00002\.jsonl is being written by pid {holder.pid} on .* another ASR run"
        with pytest.raises(UserError, match=refused), journal.lock([1, 2]):
            pass
        with journal.lock([1, 3]):  # other shards: a part of the same run goes ahead
            pass
    finally:
        holder.kill()
        holder.wait()
    with ShardJournal(tmp_path, 4, "fp").lock(range(4)):  # the dead holder left no lock
        pass


def test_failed_records_are_retried_on_the_next_run(micro_corpus, tmp_path):
    params, root = micro_corpus
    good = read_table(root / "corpus" / "videos.parquet", "videos").sort("uri").row(
        0, named=True)
    late = tmp_path / "late.mp4"  # not there yet: an S3 hiccup, a mount not up
    task = Task("vlate", str(late), True, good["duration_s"])
    cfg = params.asr.model_copy(update={"engine": "faster-whisper", "retry_failed": False})
    first = transcribe_corpus([task], cfg, params.corpus.s3, "", tmp_path / "j")
    assert first.records["vlate"]["status"] == "failed"
    shutil.copy(good["uri"], late)
    kept = transcribe_corpus([task], cfg, params.corpus.s3, "", tmp_path / "j")
    assert kept.records["vlate"]["status"] == "failed" and kept.resumed == 1
    cfg = cfg.model_copy(update={"retry_failed": True})
    again = transcribe_corpus([task], cfg, params.corpus.s3, "", tmp_path / "j")
    assert again.records["vlate"]["status"] == "done" and again.records["vlate"]["words"]
    assert (again.retried, again.resumed) == (1, 0)
    assert to_tables(again)[2]["videos_retried"] == 1
    final = transcribe_corpus([task], cfg, params.corpus.s3, "", tmp_path / "j")
    assert (final.retried, final.resumed) == (0, 1)  # done records are not redone


def test_changed_settings_do_not_reuse_records(micro_corpus, tmp_path):
    params, root = micro_corpus
    videos = read_table(root / "corpus" / "videos.parquet", "videos").head(1)
    tasks = [Task(r["video_id"], r["uri"], r["has_audio"], r["duration_s"])
             for r in videos.iter_rows(named=True)]
    fw = params.asr.model_copy(update={"engine": "faster-whisper"})
    first = transcribe_corpus(tasks, fw, params.corpus.s3, "", tmp_path)
    assert first.resumed == 0
    assert transcribe_corpus(tasks, fw.model_copy(update={"workers": 3}), params.corpus.s3, "",
                             tmp_path).resumed == 1
    other = fw.model_copy(update={"max_repeats": 5})
    assert transcribe_corpus(tasks, other, params.corpus.s3, "", tmp_path).resumed == 0
