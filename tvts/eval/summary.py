"""What a person reads of the evaluate stage's figures: a one-line headline, the headline
metrics (`metrics/eval.json`) and a Markdown table of everything."""

from __future__ import annotations

from typing import Any

# the figure each protocol is known by
MAIN_FIGURE = {"linear": "top1", "attentive": "top1", "v2v": "R@1", "t2v": "R@1",
               "finetune": "top1", "t2v_finetune": "R@1", "svo": "verb_pair_acc",
               "sort": "acc_video", "text_only_sorter": "acc"}
# protocols whose headline carries the gain over the random-weights floor: the frozen probes
# (the details keep every encoder's figure for the others; `dvc metrics show` stays ~25 wide)
GAIN_PROTOCOLS = ("linear", "attentive")
# encoders whose figures are a reference, not a result: kept out of the headline metrics
FLOOR_ENCODERS = ("random", "init")
# the encoder the paper reports each protocol of: classification and sorting from the
# pretrained model, retrieval after post-pretraining (the headline keeps that one when it
# was evaluated, so `dvc metrics show` stays one screen wide; the details keep them all)
HEADLINE_ENCODER = {"t2v": "post_pretrain", "t2v_finetune": "post_pretrain",
                    "svo": "post_pretrain"}


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
        key = MAIN_FIGURE.get(protocol, "")
        values = ", ".join(f"{e} {m.get(key) if m.get(key) is not None else float('nan'):.3g}"
                           for e, m in by_encoder.items())
        parts.append(f"{set_name} {protocol} {key}: {values}")
    return "; ".join(parts)


def headline_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """What `dvc metrics show` lists of the stage: each protocol's main figure for the encoder
    the paper reports it of (HEADLINE_ENCODER; else every trained encoder), as set ->
    `<protocol>_<figure>` -> encoder (`ssv2.linear_top1.pretrain`), with its gain over the
    random-weights floor of the same run beside it where the protocol trains on features
    (`ssv2.linear_top1.gain_over_random`), and transcript sorting's text-only control beside
    its accuracy (`transcripts.sort_acc_video.text_only_control`): a lost gain or a re-opened
    text shortcut shows in `dvc metrics diff`. The rest (the other-video control included)
    stays in the details, so `dvc metrics show` stays about 25 columns wide."""
    out: dict[str, Any] = {}
    for set_name, protocol, by_encoder in _protocols(metrics):
        key = MAIN_FIGURE.get(protocol)
        if key is None or protocol == "text_only_sorter":
            continue
        values = {e: m[key] for e, m in by_encoder.items()
                  if e not in FLOOR_ENCODERS and m.get(key) is not None}
        preferred = HEADLINE_ENCODER.get(protocol, "pretrain")
        if preferred in values:
            values = {preferred: values[preferred]}
        if not values:
            continue
        floor = by_encoder.get("random", {}).get(key)
        if protocol in GAIN_PROTOCOLS and floor is not None:
            one = len(values) == 1
            values |= {("" if one else f"{e}_") + "gain_over_random": round(v - floor, 5)
                       for e, v in list(values.items())}
        if protocol == "sort":
            control = metrics.get(set_name, {}).get("text_only_sorter", {})
            if control:
                values["text_only_control"] = next(iter(control.values())).get("acc")
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
