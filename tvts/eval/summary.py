"""What a person reads of metrics/eval.json: a one-line headline and a Markdown table."""

from __future__ import annotations

from typing import Any


def headline(metrics: dict[str, Any]) -> str:
    """One line: the first metric of each protocol, per encoder."""
    parts = []
    first = {"linear": "top1", "attentive": "top1", "v2v": "R@1", "t2v": "R@1",
             "sort": "acc_video", "text_only_sorter": "acc"}
    for set_name, protocols in metrics.items():
        if not isinstance(protocols, dict) or set_name == "timing":
            continue
        for protocol, by_encoder in protocols.items():
            if not isinstance(by_encoder, dict):
                continue
            key = first.get(protocol, "")
            values = ", ".join(f"{e} {m.get(key, float('nan')):.3g}"
                               for e, m in by_encoder.items())
            parts.append(f"{set_name} {protocol} {key}: {values}")
    return "; ".join(parts)


def summary_table(metrics: dict[str, Any]) -> str:
    """A Markdown table a person can read: one row per (set, protocol, metric), one column
    per encoder."""
    encoders: list[str] = []
    rows = []
    for set_name, protocols in metrics.items():
        if set_name == "timing" or not isinstance(protocols, dict):
            continue
        for protocol, by_encoder in protocols.items():
            if not isinstance(by_encoder, dict):
                continue
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
