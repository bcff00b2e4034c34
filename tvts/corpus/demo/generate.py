"""Generate the narrated demo corpus, its downstream sets (in the real sets' formats), and
planted leaks with their ground truth. Deterministic from the seed: every item draws from its
own generator seeded by (seed, set, index), so the worker count does not change a byte.

Layout under the output root:
    pretrain/vid_0000.mp4 + vid_0000.json     narrated videos + ground-truth sidecars
    downstream/ssv2/      labels.json, train.json, validation.json, videos/<id>.webm
    downstream/msrvtt/    MSR_VTT.json, test_list.txt, videos/all/video<i>.mp4
    downstream/svo/       svo_probes.csv, images/<image_id>.jpg (SVO-Probes' layout)
    downstream/webvid/    results_train.csv, videos/<page_dir>/<videoid>.mp4
    downstream/cc3m/      Train_GCC-training.tsv, url_map.tsv, images/<n>.jpg
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tvts.config import DemoConfig
from tvts.corpus.demo import media
from tvts.corpus.demo.scene import (
    ACTIONS,
    COLOURS,
    HELD_OUT_PAIRS,
    PHRASES,
    PRETRAIN_PAIRS,
    SHAPES,
    Scene,
    Segment,
    State,
    Thing,
    actions_for,
    apply,
    background,
    draw,
    mix_audio,
    plan_narrated,
    plan_slots,
    random_state,
    random_things,
    render,
    sentence,
    valid,
    vocabulary,
)
from tvts.corpus.demo.speech import Synthesizer
from tvts.corpus.sources import Candidate, Collected
from tvts.parallel import process_map
from tvts.storage import atomic_path, atomic_write_text

# Evaluation sets whose clips may be planted into the pretraining corpus.
LEAK_SOURCES = ("ssv2", "msrvtt")
_SET_CODES = {"pretrain": 0, "ssv2_train": 1, "ssv2_val": 2, "msrvtt": 3, "webvid": 4, "cc3m": 5,
              "msrvtt_train": 6, "svo": 7}
SSV2_TEMPLATES = {
    "move_left": "Moving [something] to the left",
    "move_right": "Moving [something] to the right",
    "move_up": "Moving [something] up",
    "move_down": "Moving [something] down",
    "grow": "Making [something] bigger",
    "shrink": "Making [something] smaller",
    "rotate": "Rotating [something]",
    "appear": "[Something] appearing",
    "disappear": "[Something] disappearing",
}
ALTERATIONS = ("rescale", "crop", "rescale+crop")
_LEAK_QUALITY, _QUALITY = 32, 23
_SCRIPT_CODE = 1  # the scripts' generators, apart from the videos'


@dataclass(frozen=True)
class Job:
    """One item to generate; everything a worker needs, picklable."""

    kind: str
    index: int
    cfg: DemoConfig
    seed: int
    root: str
    leak: dict[str, Any] | None = None


def _rng(job: Job) -> np.random.Generator:
    return np.random.default_rng([job.seed, _SET_CODES[job.kind], job.index])


def _synth(cfg: DemoConfig) -> Synthesizer:
    return Synthesizer.get(cfg.voice, cfg.speech_rate_wpm, vocabulary())


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _segment_record(seg: Segment, things: list[Thing], named: bool = True) -> dict[str, Any]:
    rec: dict[str, Any] = {"kind": seg.kind, "start_s": round(seg.start_s, 4),
                           "end_s": round(seg.end_s, 4)}
    if seg.kind == "event":
        rec.update(object=things[seg.thing].name, action=seg.action,
                   sentence=sentence(things[seg.thing], seg.action, named))
        if seg.utterance is not None:
            t0 = seg.speech_start_s
            rec["speech"] = {
                "start_s": round(t0, 4),
                "end_s": round(t0 + seg.utterance.duration_s, 4),
                "words": [{"word": w.word, "start_s": round(t0 + w.start_s, 4),
                           "end_s": round(t0 + w.end_s, 4)} for w in seg.utterance.words],
            }
    rec.update(seg.info)
    return rec


# ---------------------------------------------------------------- downstream items
def _ssv2_clip(job: Job) -> dict[str, Any]:
    rng, cfg = _rng(job), job.cfg
    action = ACTIONS[job.index % len(ACTIONS)]
    while True:
        thing = random_things(rng, 1, HELD_OUT_PAIRS)[0]
        state = random_state(rng, visible=action != "appear")
        if valid(action, thing, state):
            break
    lead, length = 0.4, float(rng.uniform(1.5, 2.2))
    seg = Segment("event", lead, lead + length, 0, action, state, apply(action, thing, state))
    scene = Scene([thing], [state], [seg], lead + length + 0.4, int(rng.integers(2**31)))
    frames = render(scene, cfg.fps, cfg.width, cfg.height)
    clip_id = str((100000 if job.kind == "ssv2_train" else 200000) + job.index)
    media.write_video(Path(job.root) / "videos" / f"{clip_id}.webm", frames, cfg.fps)
    template = SSV2_TEMPLATES[action]
    return {"id": clip_id, "label": template.replace("[something]", thing.name)
            .replace("[Something]", thing.name), "template": template,
            "placeholders": [thing.name]}


def _captioned_clip(job: Job) -> dict[str, Any]:
    """MSR-VTT (with narration audio) or WebVid (silent stock-footage style) item."""
    rng, cfg = _rng(job), job.cfg
    things = random_things(rng, int(rng.integers(1, 3)))
    initial = [random_state(rng) for _ in things]
    duration = float(rng.uniform(5.0, 7.0))
    segments = plan_narrated(rng, _synth(cfg), duration, things, initial, lead_s=0.3)
    scene = Scene(things, initial, segments, duration, int(rng.integers(2**31)))
    frames = render(scene, cfg.fps, cfg.width, cfg.height)
    sentences = [sentence(things[s.thing], s.action) for s in segments if s.kind == "event"]
    caption = ", then ".join(sentences)
    if job.kind in ("msrvtt", "msrvtt_train"):
        # test clips first, then the train split's, as MSR-VTT numbers its videos
        vid = f"video{job.index + (cfg.downstream.msrvtt if job.kind == 'msrvtt_train' else 0)}"
        audio = mix_audio(scene, _synth(cfg).sample_rate, int(rng.integers(2**31)))
        media.write_video(Path(job.root) / "videos" / "all" / f"{vid}.mp4", frames, cfg.fps,
                          audio=audio, sample_rate=_synth(cfg).sample_rate)
        return {"video_id": vid, "duration": round(duration, 3),
                "captions": [caption, *sentences]}
    vid = str(5000000 + job.index)
    lo = job.index // 50 * 50 + 1
    page_dir = f"{lo:06d}_{lo + 49:06d}"
    media.write_video(Path(job.root) / "videos" / page_dir / f"{vid}.mp4", frames, cfg.fps)
    return {"videoid": vid, "page_dir": page_dir, "name": caption, "duration": duration}


# SVO-Probes: verbs a still frame can show (an object that appears or disappears cannot be
# told from one frame of it)
_SVO_VERBS = ("move_left", "move_right", "move_up", "move_down", "grow", "shrink", "rotate")
_SVO_AT = 0.8  # the image: this far into the action


def _svo_image(rng: np.random.Generator, cfg: DemoConfig, thing: Thing, action: str,
               path: Path) -> None:
    while True:
        state = random_state(rng)
        if valid(action, thing, state):
            break
    lead, length = 0.2, 1.5
    seg = Segment("event", lead, lead + length, 0, action, state, apply(action, thing, state))
    scene = Scene([thing], [state], [seg], lead + length + 0.2, int(rng.integers(2**31)))
    frames = render(scene, cfg.fps, cfg.width, cfg.height)
    frame = frames[min(len(frames) - 1, round((lead + _SVO_AT * length) * cfg.fps))]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(frame).save(path, quality=92)


def _svo_probe(job: Job) -> dict[str, Any]:
    """A sentence, its image and a negative that changes one concept: the shape (subject),
    the action (verb) or the colour (object), in turn."""
    rng, cfg = _rng(job), job.cfg
    neg_type = ("subj", "verb", "obj")[job.index % 3]
    while True:
        thing = random_things(rng, 1)[0]
        action = _SVO_VERBS[int(rng.integers(len(_SVO_VERBS)))]
        if neg_type == "subj":
            other = Thing(thing.colour, SHAPES[int(rng.integers(len(SHAPES)))])
            neg_thing, neg_action = other, action
        elif neg_type == "verb":
            neg_thing, neg_action = thing, _SVO_VERBS[int(rng.integers(len(_SVO_VERBS)))]
        else:
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            neg_thing, neg_action = Thing(colour, thing.shape), action
        changed = (neg_thing, neg_action) != (thing, action)
        shown = all(a in actions_for(t) for t, a in ((thing, action), (neg_thing, neg_action)))
        if changed and shown:
            break
    images = Path(job.root) / "images"
    pos_id, neg_id = f"demo{job.index:05d}p", f"demo{job.index:05d}n"
    _svo_image(rng, cfg, thing, action, images / f"{pos_id}.jpg")
    _svo_image(rng, cfg, neg_thing, neg_action, images / f"{neg_id}.jpg")

    def triplet(t: Thing, a: str) -> str:
        return f"{t.shape},{PHRASES[a]},{t.colour}"

    return {"sentence": sentence(thing, action), "pos_triplet": triplet(thing, action),
            "neg_triplet": triplet(neg_thing, neg_action), "subj_neg": neg_type == "subj",
            "verb_neg": neg_type == "verb", "obj_neg": neg_type == "obj",
            "pos_url": f"https://svo.demo.invalid/{pos_id}.jpg",
            "neg_url": f"https://svo.demo.invalid/{neg_id}.jpg",
            "pos_image_id": pos_id, "neg_image_id": neg_id}


def _where(s: State) -> str:
    horiz = "on the left" if s.x < 0.35 else "on the right" if s.x > 0.65 else "in the middle"
    vert = "at the top" if s.y < 0.35 else "at the bottom" if s.y > 0.65 else ""
    return f"{vert} {horiz}".strip() if vert else horiz


def _cc3m_image(job: Job) -> dict[str, Any]:
    rng, cfg = _rng(job), job.cfg
    things = random_things(rng, int(rng.integers(1, 3)))
    states = [random_state(rng) for _ in things]
    if len(states) == 2 and (states[0].x, states[0].y) == (states[1].x, states[1].y):
        states[1] = State(1.0 - states[0].x if states[0].x != 0.5 else 0.2, states[1].y,
                          states[1].size)
    img = background(int(rng.integers(2**31)), cfg.width, cfg.height)
    for th, st in zip(things, states, strict=True):
        draw(img, th, st)
    parts = [f"a {'big' if st.size > 0.14 else 'small'} {th.name} {_where(st)}"
             for th, st in zip(things, states, strict=True)]
    name = f"{job.index:07d}.jpg"
    target = Path(job.root) / "images" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8)).save(
            tmp, format="JPEG", quality=90)
    return {"caption": " and ".join(parts), "url": f"https://cc3m.demo.invalid/{name}",
            "path": f"images/{name}"}


# ---------------------------------------------------------------- pretraining videos
def _alter(frames: np.ndarray, alteration: str, rng: np.random.Generator, width: int,
           height: int) -> tuple[np.ndarray, int]:
    """A leaked copy: time-shifted (leading frames dropped), rescaled and/or cropped."""
    trim = int(rng.integers(1, max(2, len(frames) // 4)))
    out = []
    crop = float(rng.uniform(0.75, 0.88))
    for f in frames[trim:]:
        im = Image.fromarray(f)
        if "crop" in alteration:
            w, h = im.size
            cw, ch = int(w * crop), int(h * crop)
            left, top = (w - cw) // 2, (h - ch) // 2
            im = im.crop((left, top, left + cw, top + ch))
        if "rescale" in alteration:
            im = im.resize((max(16, width // 2), max(16, height // 2)), Image.BILINEAR)
        out.append(np.asarray(im.resize((width, height), Image.BILINEAR)))
    return np.stack(out), trim


@dataclass(frozen=True)
class Script:
    """What the videos of one script share: objects, events (object, action) and setting."""

    things: list[Thing]
    events: list[tuple[int, str]]
    background_seed: int
    named: bool = True  # the narration names the object, or says "it"


def script_of(cfg: DemoConfig, seed: int, video_index: int) -> Script:
    """The script a pretraining video says, one event per slot. `orders_per_script` videos
    in a row share a script, setting included, and each says it in an order of its own: the
    same transcripts come in different orders across videos, and the only thing that tells
    those videos apart is which event each slot shows, so neither the text alone nor a
    video's look can fit the corpus: sorting has to read the frames."""
    rng = np.random.default_rng([seed, _SET_CODES["pretrain"], _SCRIPT_CODE,
                                 video_index // cfg.orders_per_script])
    things = random_things(rng, cfg.objects_per_video, PRETRAIN_PAIRS)
    slots = int(cfg.duration_s // cfg.event_s)
    # each object in as many slots as the others (to within one)
    events: list[tuple[int, str]] = []
    for i in (j % len(things) for j in range(slots)):
        options = [a for a in actions_for(things[i]) if (i, a) not in events]
        events.append((i, str(rng.choice(options))))
    background = int(rng.integers(2**31))
    return Script(things, events, background, bool(rng.random() < cfg.named_fraction))


def with_script_groups(collected: Collected) -> Collected:
    """The demo's candidates with their script as split group (read from each sidecar), so
    the corpus split keeps a script's videos together: a held-out video says no sentence in
    an order a training video also shows."""
    def grouped(c: Candidate) -> Candidate:
        side = c.path.with_suffix(".json") if c.path is not None else None
        if side is None or not side.exists():
            return c
        return replace(c, split_group=f"script{json.loads(side.read_text())['script']}")

    return replace(collected, candidates=[grouped(c) for c in collected.candidates])


def _pretrain_video(job: Job) -> dict[str, Any]:
    rng, cfg = _rng(job), job.cfg
    synth = _synth(cfg)
    script = script_of(cfg, job.seed, job.index)
    things = script.things
    events = [script.events[j] for j in rng.permutation(len(script.events))]
    initial = [random_state(rng) for _ in things]
    leak_frames = None
    leak_slot = None
    if job.leak is not None:
        src = Path(job.leak["path"])
        leak_frames, trim = _alter(media.read_frames(src), job.leak["alteration"], rng,
                                   cfg.width, cfg.height)
        leak_slot = len(leak_frames) / cfg.fps
    segments = plan_slots(rng, synth, things, events, cfg.event_s, cfg.speech_at_s, leak_slot,
                          script.named)
    scene = Scene(things, initial, segments, cfg.duration_s, script.background_seed)
    frames = render(scene, cfg.fps, cfg.width, cfg.height, leak_frames)
    audio = mix_audio(scene, synth.sample_rate, int(rng.integers(2**31)))
    stem = f"vid_{job.index:04d}"
    video_path = Path(job.root) / f"{stem}.mp4"
    media.write_video(video_path, frames, cfg.fps, audio=audio, sample_rate=synth.sample_rate,
                      quality=_LEAK_QUALITY if job.leak else _QUALITY)
    leak_rec = None
    for seg in segments:
        if seg.kind == "leak" and job.leak is not None:
            leak_rec = {"downstream_set": job.leak["set"], "downstream_id": job.leak["id"],
                        "alteration": f"shift+{job.leak['alteration']}",
                        "offset_s": round(seg.start_s, 4), "trimmed_frames": trim}
            seg.info = {k: v for k, v in leak_rec.items() if k != "offset_s"}
    sidecar = {
        "file": video_path.name,
        "duration_s": cfg.duration_s,
        "fps": cfg.fps,
        "width": cfg.width,
        "height": cfg.height,
        "sample_rate": synth.sample_rate,
        "voice": cfg.voice,
        "objects": [asdict(t) for t in things],
        # the videos of one script say the same sentences: they share a split
        "script": job.index // cfg.orders_per_script,
        "segments": [_segment_record(s, things, script.named) for s in segments],
        "leak": leak_rec,
    }
    _write_json(Path(job.root) / f"{stem}.json", sidecar)
    return {"file": video_path.name, "leak": leak_rec}


_MAKERS: dict[str, Callable[[Job], dict[str, Any]]] = {
    "ssv2_train": _ssv2_clip,
    "ssv2_val": _ssv2_clip,
    "msrvtt": _captioned_clip,
    "msrvtt_train": _captioned_clip,
    "svo": _svo_probe,
    "webvid": _captioned_clip,
    "cc3m": _cc3m_image,
    "pretrain": _pretrain_video,
}


def _run_job(job: Job) -> dict[str, Any]:
    return _MAKERS[job.kind](job)


def _run_all(jobs: list[Job], workers: int, progress: Callable[[int], None]) -> list[dict]:
    return process_map(_run_job, jobs, workers, progress)


# ---------------------------------------------------------------- annotation files
def _write_ssv2(root: Path, train: list[dict], val: list[dict]) -> None:
    labels = {t.replace("[something]", "something").replace("[Something]", "Something"): str(i)
              for i, t in enumerate(SSV2_TEMPLATES.values())}
    _write_json(root / "labels.json", labels)
    _write_json(root / "train.json", train)
    _write_json(root / "validation.json", val)


def _write_msrvtt(root: Path, items: list[dict], train: list[dict]) -> None:
    videos = [{"category": 0, "url": "", "video_id": it["video_id"], "start time": 0.0,
               "end time": it["duration"], "split": split, "id": i}
              for i, (it, split) in enumerate([(t, "test") for t in items]
                                             + [(t, "train") for t in train])]
    items = items + train
    sentences = [{"caption": c, "video_id": it["video_id"], "sen_id": 0}
                 for it in items for c in it["captions"]]
    for i, s in enumerate(sentences):
        s["sen_id"] = i
    _write_json(root / "MSR_VTT.json", {"info": {"description": "tvts demo MSR-VTT"},
                                        "videos": videos, "sentences": sentences})
    atomic_write_text(root / "test_list.txt",
                      "".join(f"{v['video_id']}\n" for v in videos if v["split"] == "test"))


def _write_svo(root: Path, items: list[dict]) -> None:
    header = ["sentence", "pos_triplet", "neg_triplet", "subj_neg", "verb_neg", "obj_neg",
              "pos_url", "neg_url", "pos_image_id", "neg_image_id"]
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "svo_probes.csv",
                      _csv_text(["", *header], ([i, *(it[h] for h in header)]
                                                for i, it in enumerate(items))))


def _csv_text(header: list[str], rows: Iterable[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _write_webvid(root: Path, items: list[dict]) -> None:
    rows = [[it["videoid"], f"https://webvid.demo.invalid/{it['videoid']}.mp4",
             f"PT00H00M{round(it['duration']):02d}S", it["page_dir"], it["name"]]
            for it in items]
    atomic_write_text(root / "results_train.csv",
                      _csv_text(["videoid", "contentUrl", "duration", "page_dir", "name"], rows))


def _write_cc3m(root: Path, items: list[dict]) -> None:
    atomic_write_text(root / "Train_GCC-training.tsv",
                      "".join(f"{it['caption']}\t{it['url']}\n" for it in items))
    atomic_write_text(root / "url_map.tsv",
                      "".join(f"{it['url']}\t{it['path']}\n" for it in items))


# ---------------------------------------------------------------- entry point
@dataclass(frozen=True)
class DemoOutput:
    pretrain_dir: Path
    downstream_dir: Path
    # One row per planted leak: pretraining file (relative to pretrain_dir), set, id, alteration.
    leaks: list[dict[str, Any]]


def plan_leaks(cfg: DemoConfig, seed: int, clips: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Which evaluation clips are planted in which pretraining videos, and how altered."""
    rng = np.random.default_rng([seed, 99])
    pool = [(s, cid) for s in LEAK_SOURCES for cid in clips[s]]
    n = min(round(cfg.leak_fraction * len(pool)), cfg.num_videos)
    chosen = rng.choice(len(pool), size=n, replace=False) if n else []
    hosts = rng.choice(cfg.num_videos, size=n, replace=False) if n else []
    return [{"set": pool[c][0], "id": pool[c][1], "video_index": int(h),
             "alteration": ALTERATIONS[k % len(ALTERATIONS)]}
            for k, (c, h) in enumerate(zip(chosen, hosts, strict=True))]


def generate_demo(cfg: DemoConfig, seed: int, root: str | Path, workers: int = 1,
                  progress: Callable[[int], None] | None = None) -> DemoOutput:
    root = Path(root)
    tick = progress or (lambda n: None)
    down = root / "downstream"
    sizes = cfg.downstream
    ds_jobs = (
        [Job("ssv2_train", i, cfg, seed, str(down / "ssv2")) for i in range(sizes.ssv2_train)]
        + [Job("ssv2_val", i, cfg, seed, str(down / "ssv2")) for i in range(sizes.ssv2_val)]
        + [Job("msrvtt", i, cfg, seed, str(down / "msrvtt")) for i in range(sizes.msrvtt)]
        + [Job("msrvtt_train", i, cfg, seed, str(down / "msrvtt"))
           for i in range(sizes.msrvtt_train)]
        + [Job("svo", i, cfg, seed, str(down / "svo")) for i in range(sizes.svo)]
        + [Job("webvid", i, cfg, seed, str(down / "webvid")) for i in range(sizes.webvid)]
        + [Job("cc3m", i, cfg, seed, str(down / "cc3m")) for i in range(sizes.cc3m)]
    )
    results = _run_all(ds_jobs, workers, tick)
    by_kind: dict[str, list[dict]] = {}
    for job, res in zip(ds_jobs, results, strict=True):
        by_kind.setdefault(job.kind, []).append(res)
    _write_ssv2(down / "ssv2", by_kind["ssv2_train"], by_kind["ssv2_val"])
    _write_msrvtt(down / "msrvtt", by_kind["msrvtt"], by_kind.get("msrvtt_train", []))
    _write_svo(down / "svo", by_kind.get("svo", []))
    _write_webvid(down / "webvid", by_kind["webvid"])
    _write_cc3m(down / "cc3m", by_kind["cc3m"])

    clip_paths = {
        "ssv2": {it["id"]: down / "ssv2" / "videos" / f"{it['id']}.webm"
                 for it in by_kind["ssv2_val"]},
        "msrvtt": {it["video_id"]: down / "msrvtt" / "videos" / "all" / f"{it['video_id']}.mp4"
                   for it in by_kind["msrvtt"]},
    }
    leaks = plan_leaks(cfg, seed, {k: list(v) for k, v in clip_paths.items()})
    leak_by_host = {
        lk["video_index"]: {**lk, "path": str(clip_paths[lk["set"]][lk["id"]])} for lk in leaks
    }
    pre = root / "pretrain"
    pre_jobs = [Job("pretrain", i, cfg, seed, str(pre), leak_by_host.get(i))
                for i in range(cfg.num_videos)]
    planted = [r["leak"] | {"file": r["file"]} for r in _run_all(pre_jobs, workers, tick)
               if r["leak"] is not None]
    return DemoOutput(pre, down, planted)


def demo_item_count(cfg: DemoConfig) -> int:
    s = cfg.downstream
    return (cfg.num_videos + s.ssv2_train + s.ssv2_val + s.msrvtt + s.msrvtt_train + s.svo
            + s.webvid + s.cc3m)
