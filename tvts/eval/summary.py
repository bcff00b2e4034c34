"""What a person reads of the evaluate stage's figures: a one-line headline, the headline
metrics (`metrics/eval.json`) and a Markdown table of everything."""

from __future__ import annotations

from typing import Any

from tvts.eval.registry import PROTOCOLS, floor_encoders


def _figure(protocol: str) -> str | None:
    """The figure a protocol is known by (tvts.eval.registry)."""
    spec = PROTOCOLS.get(protocol)
    return spec.main_figure if spec is not None else None


def _protocols(metrics: dict[str, Any]):
    for set_name, protocols in metrics.items():
        if not isinstance(protocols, dict) or set_name == "timing":
            continue
        for protocol, by_encoder in protocols.items():
            if isinstance(by_encoder, dict):
                yield set_name, protocol, by_encoder


def headline(metrics: dict[str, Any]) -> str:
    """One line: the first metric of each protocol, per encoder."""
    parts = []
    for set_name, protocol, by_encoder in _protocols(metrics):
        key = _figure(protocol) or ""
        values = ", ".join(f"{e} {m.get(key) if m.get(key) is not None else float('nan'):.3g}"
                           for e, m in by_encoder.items())
        parts.append(f"{set_name} {protocol} {key}: {values}")
    return "; ".join(parts)


def headline_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """What `dvc metrics show` lists of the stage: each protocol's main figure for the encoder
    the paper reports it of (its registry entry's headline_encoder; else every trained
    encoder), as set ->
    `<protocol>_<figure>` -> encoder (`ssv2.linear_top1.pretrain`), with its gain over the
    random-weights floor of the same run beside it where the protocol trains on features
    (`ssv2.linear_top1.gain_over_random`), and transcript sorting's text-only control beside
    its accuracy (`transcripts.sort_acc_video.text_only_control`): a lost gain or a re-opened
    text shortcut shows in `dvc metrics diff`. The rest (the other-video control included)
    stays in the details, so `dvc metrics show` stays about 25 columns wide."""
    out: dict[str, Any] = {}
    floors = floor_encoders()
    for set_name, protocol, by_encoder in _protocols(metrics):
        spec = PROTOCOLS.get(protocol)
        if spec is None or not spec.headline:
            continue
        key = spec.main_figure
        values = {e: m[key] for e, m in by_encoder.items()
                  if e not in floors and m.get(key) is not None}
        if spec.headline_encoder in values:
            values = {spec.headline_encoder: values[spec.headline_encoder]}
        if not values:
            continue
        floor = by_encoder.get("random", {}).get(key)
        if spec.gain_over_random and floor is not None:
            one = len(values) == 1
            values |= {("" if one else f"{e}_") + "gain_over_random": round(v - floor, 5)
                       for e, v in list(values.items())}
        if spec.control is not None:
            control_protocol, label = spec.control
            control = metrics.get(set_name, {}).get(control_protocol, {})
            if control:
                values[label] = next(iter(control.values())).get(
                    PROTOCOLS[control_protocol].main_figure)
        out.setdefault(set_name, {})[f"{protocol}_{key.replace('@', '')}"] = values
    return out


def summary_table(metrics: dict[str, Any]) -> str:
    """A Markdown table a person can read: one row per (set, protocol, metric), one column
    per encoder."""
    encoders: list[str] = []
    rows = []
    for set_name, protocol, by_encoder in _protocols(metrics):
        for e in by_encoder:
            if e not in encoders:
                encoders.append(e)
        keys = list(next(iter(by_encoder.values())))
        for key in keys:
            rows.append((set_name, protocol, key,
                         [by_encoder.get(e, {}).get(key) for e in encoders]))
    head = "| set | protocol | metric | " + " | ".join(encoders) + " |\n"
    head += "|---|---|---|" + "---|" * len(encoders) + "\n"
    body = "".join(f"| {s} | {p} | {k} | "
                   + " | ".join("" if v is None else f"{v:.4g}" if isinstance(v, float)
                                else str(v) for v in vals) + " |\n"
                   for s, p, k, vals in rows)
    return head + body
