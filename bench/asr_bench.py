"""ASR on the demo corpus, both engines side by side in one run: word error rate against the
generator's script, median word-start error against the speech timing, words invented in
the quiet parts of the event slots, real-time factor, and the stage's own overhead (reading
audio, journaling).

    python bench/asr_bench.py [--videos 8] [--out bench/results/asr.json]

Needs the demo corpus (`dvc repro corpus` or `tvts stage corpus`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from results_io import machine, write_results

from tvts.asr.engines import SAMPLE_RATE, load_engine
from tvts.asr.journal import ShardJournal
from tvts.asr.scoring import align, demo_reference, inside, start_errors
from tvts.config import load_params
from tvts.tables import read_table
from tvts.video.audio import read_audio_float


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--engines", default="whisper-timestamped,faster-whisper")
    ap.add_argument("--out", default="bench/results/asr.json")
    args = ap.parse_args()
    params = load_params(args.params)
    videos = read_table("data/corpus/videos.parquet", "videos")
    rows = videos.filter(videos["source"] == "demo").sort("uri").head(args.videos).to_dicts()
    if not rows:
        raise SystemExit("no demo videos in data/corpus: run `tvts stage corpus` first")
    results = {}
    for engine_name in args.engines.split(","):
        cfg = params.asr.model_copy(update={"engine": engine_name})
        t0 = time.perf_counter()
        engine = load_engine(cfg)
        load_s = time.perf_counter() - t0
        sub = dels = ins = ref_n = invented = 0
        errs: list[float] = []
        io_s = engine_s = write_s = audio_s = 0.0
        with tempfile.TemporaryDirectory() as tmp:
            journal = ShardJournal(tmp, 4, "bench")
            for row in rows:
                sidecar = json.loads(Path(row["uri"]).with_suffix(".json").read_text())
                ref = demo_reference(sidecar)
                t0 = time.perf_counter()
                audio = read_audio_float(row["uri"], SAMPLE_RATE)
                t1 = time.perf_counter()
                tr = engine.transcribe(audio)
                t2 = time.perf_counter()
                journal.append({"video_id": row["video_id"], "words": [
                    [w.word, w.start_s, w.end_s, w.confidence] for w in tr.words]})
                t3 = time.perf_counter()
                io_s, engine_s, write_s = io_s + t1 - t0, engine_s + t2 - t1, write_s + t3 - t2
                audio_s += len(audio) / SAMPLE_RATE
                a = align(ref.words, [w.word for w in tr.words])
                sub, dels, ins, ref_n = (sub + a.substitutions, dels + a.deletions,
                                         ins + a.insertions, ref_n + a.reference_words)
                errs += start_errors(ref.starts, [w.start_s for w in tr.words], a)
                invented += sum(inside(w.start_s, w.end_s, ref.pauses) for w in tr.words)
        results[engine_name] = {
            "wer": round((sub + dels + ins) / ref_n, 4),
            "substitutions": sub, "deletions": dels, "insertions": ins, "reference_words": ref_n,
            "median_abs_start_error_s": round(statistics.median(errs), 4) if errs else None,
            "p90_abs_start_error_s": round(sorted(errs)[int(0.9 * (len(errs) - 1))], 4)
            if errs else None,
            "words_invented_in_pauses": invented,
            "audio_s": round(audio_s, 2), "engine_s": round(engine_s, 2),
            "real_time_factor": round(engine_s / audio_s, 4),
            "overhead_share": round((io_s + write_s) / engine_s, 4),
            "model_load_s": round(load_s, 2),
        }
        print(engine_name, results[engine_name], flush=True)
    wt, fw = results.get("whisper-timestamped"), results.get("faster-whisper")
    out = {
        "machine": machine(),
        "settings": {"videos": len(rows), "model": params.asr.model,
                     "threads": params.asr.threads, "vad": params.asr.vad,
                     "beam_size": params.asr.beam_size, "profile": params.profile},
        "engines": results,
    }
    if wt and fw:
        out["ratio_rtf_whisper_timestamped_over_faster_whisper"] = round(
            wt["real_time_factor"] / fw["real_time_factor"], 3)
    write_results(args.out, out)


if __name__ == "__main__":
    main()
