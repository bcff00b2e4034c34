"""Scenes of the demo corpus: objects (shape x colour) doing actions, planned then rendered.

The shot is a close-up (`CLOSE_UP` times larger) of the object of the latest narrated event
alone (a narrated video cuts to what is being talked about). Without these cuts, telling which
transcript goes where needs spotting which of several objects moves, which a small
from-scratch encoder does not learn in a few CPU minutes.

Coordinates are fractions of the frame (x of the width, y of the height, size of the shorter
side) so one plan renders at any resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from tvts.corpus.demo.speech import Synthesizer, Utterance

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45),
    "green": (50, 185, 70),
    "blue": (45, 95, 235),
    "yellow": (240, 215, 40),
    "purple": (155, 65, 205),
    "orange": (250, 135, 35),
}
SHAPES = ("circle", "square", "triangle", "diamond")
# action -> the words said while it happens
PHRASES: dict[str, str] = {
    "move_left": "moves to the left",
    "move_right": "moves to the right",
    "move_up": "moves up",
    "move_down": "moves down",
    "grow": "grows",
    "shrink": "shrinks",
    "rotate": "rotates",
    "appear": "appears",
    "disappear": "disappears",
}
ACTIONS = tuple(PHRASES)
_STEP_X, _STEP_Y = 0.3, 0.3
_X_RANGE, _Y_RANGE = (0.15, 0.85), (0.2, 0.8)
_SIZE_RANGE, _SIZE_FACTOR = (0.08, 0.32), 1.5
_ROTATION = {"square": 45.0, "diamond": 45.0, "triangle": 90.0}
CLOSE_UP = 2.0  # the object in shot is drawn this much larger


@dataclass(frozen=True)
class Thing:
    colour: str
    shape: str

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class State:
    x: float
    y: float
    size: float
    angle: float = 0.0
    alpha: float = 1.0


def valid(action: str, thing: Thing, s: State) -> bool:
    """Whether `action` is visible and keeps the object in frame."""
    if s.alpha < 1.0:
        return action == "appear"
    return {
        "move_left": s.x - _STEP_X >= _X_RANGE[0] - 1e-9,
        "move_right": s.x + _STEP_X <= _X_RANGE[1] + 1e-9,
        "move_up": s.y - _STEP_Y >= _Y_RANGE[0] - 1e-9,
        "move_down": s.y + _STEP_Y <= _Y_RANGE[1] + 1e-9,
        "grow": s.size * _SIZE_FACTOR <= _SIZE_RANGE[1],
        "shrink": s.size / _SIZE_FACTOR >= _SIZE_RANGE[0],
        "rotate": thing.shape in _ROTATION,
        "appear": False,
        "disappear": True,
    }[action]


def apply(action: str, thing: Thing, s: State) -> State:
    if action == "move_left":
        return replace(s, x=s.x - _STEP_X)
    if action == "move_right":
        return replace(s, x=s.x + _STEP_X)
    if action == "move_up":
        return replace(s, y=s.y - _STEP_Y)
    if action == "move_down":
        return replace(s, y=s.y + _STEP_Y)
    if action == "grow":
        return replace(s, size=s.size * _SIZE_FACTOR)
    if action == "shrink":
        return replace(s, size=s.size / _SIZE_FACTOR)
    if action == "rotate":
        return replace(s, angle=s.angle + _ROTATION[thing.shape])
    if action == "appear":
        return replace(s, alpha=1.0)
    if action == "disappear":
        return replace(s, alpha=0.0)
    raise ValueError(f"unknown action {action!r}")


def sentence(thing: Thing, action: str, named: bool = True) -> str:
    """What a narrator says of `thing` doing `action`; `named=False`: "it ..." (the object
    is the one in shot)."""
    return f"the {thing.name} {PHRASES[action]}" if named else f"it {PHRASES[action]}"


def vocabulary() -> list[str]:
    """Every sentence a scene can say, in a fixed order."""
    # the pronoun forms last: appending keeps every earlier recording the same
    return ([sentence(Thing(c, s), a) for c in COLOURS for s in SHAPES for a in ACTIONS]
            + [sentence(Thing("red", "circle"), a, named=False) for a in ACTIONS])


@dataclass
class Segment:
    """A span of the timeline: an `event` (narrated action) or a `leak` (a planted clip)."""

    kind: str
    start_s: float
    end_s: float
    thing: int = -1
    action: str = ""
    before: State | None = None
    after: State | None = None
    speech_start_s: float = 0.0
    utterance: Utterance | None = None
    info: dict = field(default_factory=dict)


@dataclass
class Scene:
    things: list[Thing]
    initial: list[State]
    segments: list[Segment]
    duration_s: float
    background_seed: int

    def state_at(self, t: float) -> list[State]:
        states = list(self.initial)
        for seg in self.segments:
            if seg.kind != "event" or seg.start_s > t:
                continue
            assert seg.before is not None and seg.after is not None
            if t >= seg.end_s:
                states[seg.thing] = seg.after
            else:
                p = (t - seg.start_s) / (seg.end_s - seg.start_s)
                p = p * p * (3 - 2 * p)  # smoothstep: starts and stops gently
                b, a = seg.before, seg.after
                states[seg.thing] = State(*(bv + (av - bv) * p for bv, av in zip(
                    (b.x, b.y, b.size, b.angle, b.alpha), (a.x, a.y, a.size, a.angle, a.alpha),
                    strict=True)))
        return states

    def focus_at(self, t: float) -> int | None:
        """The object in shot at `t`: the one of the latest event started by then (the first
        event's before it); None when the scene has no events (every object is shown)."""
        events = [seg for seg in self.segments if seg.kind == "event"]
        if not events:
            return None
        focus = events[0].thing
        for seg in events:
            if seg.start_s > t:
                break
            focus = seg.thing
        return focus

    def leak_at(self, t: float) -> Segment | None:
        for seg in self.segments:
            if seg.kind == "leak" and seg.start_s <= t < seg.end_s:
                return seg
        return None


# The (colour, shape) pairs split in two halves, each colour and each shape in both: the
# pretraining videos show the first half, the SSV2-format clips the second, so a probe on
# those clips measures an action learned on other objects, not a looked-up object.
PRETRAIN_PAIRS = tuple((c, s) for i, c in enumerate(COLOURS) for j, s in enumerate(SHAPES)
                       if (i + j) % 2 == 0)
HELD_OUT_PAIRS = tuple((c, s) for i, c in enumerate(COLOURS) for j, s in enumerate(SHAPES)
                       if (i + j) % 2 == 1)


def random_things(rng: np.random.Generator, n: int,
                  pairs: tuple[tuple[str, str], ...] | None = None) -> list[Thing]:
    """n objects of distinct colours and distinct shapes, from `pairs` when given."""
    if pairs is None:
        colours = rng.choice(list(COLOURS), size=n, replace=False)
        shapes = rng.choice(SHAPES, size=n, replace=False)
        return [Thing(str(c), str(s)) for c, s in zip(colours, shapes, strict=True)]
    while True:
        picked = [pairs[int(k)] for k in rng.choice(len(pairs), size=n, replace=False)]
        if len({c for c, _ in picked}) == n and len({s for _, s in picked}) == n:
            return [Thing(c, s) for c, s in picked]


def random_state(rng: np.random.Generator, visible: bool = True) -> State:
    return State(
        x=float(rng.choice([0.2, 0.5, 0.8])),
        y=float(rng.choice([0.25, 0.5, 0.75])),
        size=float(rng.uniform(0.11, 0.17)),
        alpha=1.0 if visible else 0.0,
    )


def plan_narrated(
    rng: np.random.Generator,
    synth: Synthesizer,
    duration_s: float,
    things: list[Thing],
    initial: list[State],
    lead_s: float = 0.5,
) -> list[Segment]:
    """Events one after another, each following from the state the last one left (a
    captioned clip: MSR-VTT, WebVid), each narrated while it happens: it lasts its sentence
    plus a little, and the sentence starts just after the action."""
    states = list(initial)
    segments: list[Segment] = []
    t = lead_s
    recent: list[int] = []  # objects of the events so far
    while True:
        options = [(i, a) for i, th in enumerate(things) for a in ACTIONS
                   if valid(a, th, states[i])]
        # A narrator moves on to another object: the ones talked about least recently come
        # first, so neighbouring events name (and the cuts show) different objects.
        latest = set(recent[-(len(things) - 1):]) if len(things) > 1 else set()
        fresh = [(i, a) for i, a in options if i not in latest]
        options = fresh or options
        # Appearing and disappearing are rarer, so scenes stay mostly populated.
        weights = np.array([0.35 if a in ("appear", "disappear") else 1.0 for _, a in options])
        i, action = options[int(rng.choice(len(options), p=weights / weights.sum()))]
        utt = synth.say(sentence(things[i], action))
        delay = float(rng.uniform(0.1, 0.3))
        length = delay + utt.duration_s + float(rng.uniform(0.3, 0.9))
        if t + length > duration_s - 0.3:
            return segments
        after = apply(action, things[i], states[i])
        segments.append(Segment("event", t, t + length, i, action, states[i], after,
                                t + delay, utt))
        recent.append(i)
        states[i] = after
        t += length + float(rng.uniform(0.0, 0.4))


def event_state(rng: np.random.Generator, thing: Thing, action: str) -> State:
    """A start state from which `action` is visible and keeps the object in frame."""
    while True:
        state = random_state(rng, visible=action != "appear")
        if valid(action, thing, state):
            return state


def actions_for(thing: Thing) -> list[str]:
    """The actions `thing` can show from some state (a circle does not visibly rotate)."""
    return [a for a in ACTIONS if a != "rotate" or thing.shape in _ROTATION]


def plan_slots(
    rng: np.random.Generator,
    synth: Synthesizer,
    things: list[Thing],
    events: list[tuple[int, str]],
    slot_s: float,
    speech_at_s: float,
    leak_slot_s: float | None = None,
    named: bool = True,
) -> list[Segment]:
    """One event per slot of `slot_s` seconds, in the order given, its sentence said
    `speech_at_s` into the slot.

    Each event starts from a state of its own (what it shows does not follow from the
    events before it), so nothing in the script says where an event comes in the video:
    only the frames do. A leak is cut in over the frames of the slots it needs, from one at
    random, while the narration goes on (a re-upload with a voice-over): the host keeps every
    transcript window and reaches the dedup stage.
    """
    segments: list[Segment] = []
    for j, (i, action) in enumerate(events):
        t = j * slot_s
        before = event_state(rng, things[i], action)
        utt = synth.say(sentence(things[i], action, named))
        segments.append(Segment("event", t, t + slot_s, i, action, before,
                                apply(action, things[i], before), t + speech_at_s, utt))
    if leak_slot_s is not None:
        need = min(len(events), math.ceil(leak_slot_s / slot_s))
        t = int(rng.integers(0, len(events) - need + 1)) * slot_s
        segments.append(Segment("leak", t, t + leak_slot_s))
    return segments


def background(seed: int, width: int, height: int) -> np.ndarray:
    """A static, muted two-colour gradient with soft blobs: float32 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    c0, c1 = rng.uniform(25, 95, size=(2, 3))
    theta = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u = (np.cos(theta) * xx / width + np.sin(theta) * yy / height + 1.0) / 2.0
    img = c0[None, None] * (1 - u[..., None]) + c1[None, None] * u[..., None]
    for _ in range(3):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.15, 0.4) * min(width, height)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        img += blob[..., None] * rng.uniform(-20, 20, size=3)[None, None]
    return np.clip(img, 0, 255).astype(np.float32)


def draw(img: np.ndarray, thing: Thing, s: State) -> None:
    """Paint `thing` in state `s` onto float32 `img` in place."""
    if s.alpha <= 0.0:
        return
    h, w = img.shape[:2]
    r = s.size * min(h, w)
    cx, cy = s.x * w, s.y * h
    x0, x1 = max(int(cx - 1.5 * r), 0), min(int(cx + 1.5 * r) + 1, w)
    y0, y1 = max(int(cy - 1.5 * r), 0), min(int(cy + 1.5 * r) + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dx, dy = xx + 0.5 - cx, yy + 0.5 - cy
    a = math.radians(s.angle)
    u = math.cos(a) * dx + math.sin(a) * dy
    v = -math.sin(a) * dx + math.cos(a) * dy
    if thing.shape == "circle":
        mask = u * u + v * v <= r * r
    elif thing.shape == "square":
        mask = (np.abs(u) <= 0.8 * r) & (np.abs(v) <= 0.8 * r)
    elif thing.shape == "diamond":
        mask = np.abs(u) + np.abs(v) <= r
    else:  # triangle, apex up
        mask = (v <= 0.5 * r) & (v >= -r + math.sqrt(3) * np.abs(u))
    region = img[y0:y1, x0:x1]
    colour = np.asarray(COLOURS[thing.colour], np.float32)
    region[mask] = s.alpha * colour + (1.0 - s.alpha) * region[mask]


def render(scene: Scene, fps: int, width: int, height: int,
           leak_frames: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 frames (T, H, W, 3) at times i / fps."""
    bg = background(scene.background_seed, width, height)
    n = round(scene.duration_s * fps)
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        t = i / fps
        leak = scene.leak_at(t)
        if leak is not None and leak_frames is not None:
            k = min(round((t - leak.start_s) * fps), len(leak_frames) - 1)
            out[i] = leak_frames[k]
            continue
        img = bg.copy()
        focus = scene.focus_at(t)
        for j, (thing, state) in enumerate(zip(scene.things, scene.state_at(t), strict=True)):
            if focus is None:
                draw(img, thing, state)
            elif j == focus:
                draw(img, thing, replace(state, size=state.size * CLOSE_UP))
        out[i] = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return out


def mix_audio(scene: Scene, sample_rate: int, noise_seed: int) -> np.ndarray:
    """Narration on a faint noise floor: int16 mono for the scene's whole duration."""
    rng = np.random.default_rng(noise_seed)
    n = round(scene.duration_s * sample_rate)
    track = rng.normal(0.0, 12.0, size=n)
    for seg in scene.segments:
        if seg.kind == "event" and seg.utterance is not None:
            k = round(seg.speech_start_s * sample_rate)
            x = seg.utterance.samples[: max(0, n - k)]
            track[k : k + len(x)] += x
    return np.clip(np.round(track), -32768, 32767).astype(np.int16)
