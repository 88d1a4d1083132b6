"""Snapshot statistics in the terms of CosmicMan's Table 1, and the dataset card.

Statistics: image count (per split), mean resolution, person-type mix, number of
categories and attributes (answer values) in use, mean global and face quality, and per
category the distribution of answers. The card is Markdown with two plots, written inside
the snapshot so every version documents itself.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np

from flywheel.preview import markdown_table
from flywheel.protocol import Protocol
from flywheel.snapshot.writer import SPLITS, read_split


def snapshot_stats(folder: Path, protocol: Protocol) -> dict:
    rows = {s: read_split(folder, s) for s in SPLITS}
    every = [r for s in SPLITS for r in rows[s]]

    def mean(values) -> float | None:
        v = [x for x in values if x is not None]
        return round(float(np.mean(v)), 3) if v else None

    answers: dict[str, Counter] = {c: Counter() for c in protocol.categories}
    for r in every:
        for c, a in (r["answers"] or []):
            if c in answers:
                answers[c][a] += 1
    used = {c: n for c, n in answers.items() if n}
    return {
        "images": len(every),
        "split_counts": {s: len(rows[s]) for s in SPLITS},
        "shards": len({r["shard"] for r in every}),
        "mean_height": mean(r["height"] for r in every),
        "mean_width": mean(r["width"] for r in every),
        "person_types": dict(sorted(Counter(r["person_type"] or "unknown" for r in every).items())),
        "categories": len(used),
        "attributes": sum(len(n) for n in used.values()),
        "mean_quality": mean(r["quality"] for r in every),
        "mean_face_quality": mean(r["face_quality"] for r in every),
        "sources": dict(sorted(Counter(r["source"] for r in every).items())),
        "licences": dict(sorted(Counter(r["licence"] or "unknown" for r in every).items())),
        "parsing_by_source": parsing_by_source(every),
        "answer_distribution": {c: dict(sorted(n.items())) for c, n in answers.items()},
    }


def parsing_by_source(rows) -> dict[str, dict]:
    """Per image source: how many parsing maps came from each backend and the share of geometry
    fallbacks (coarse maps that become HOLA masks; ``unknown`` for rows of v1 snapshots)."""
    out: dict[str, Counter] = {}
    for r in rows:
        out.setdefault(r["source"] or "unknown", Counter())[r.get("parsing_source") or "unknown"] += 1
    return {src: {"maps": dict(sorted(n.items())), "fallback_share": round(n["fallback"] / max(1, sum(n.values())), 4)}
            for src, n in sorted(out.items())}


def _plot_distributions(stats: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dist = {c: d for c, d in stats["answer_distribution"].items() if d}
    cols = 6
    rows = max(1, int(np.ceil(len(dist) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.6, rows * 2.0), dpi=80, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (c, d) in zip(axes.flat, sorted(dist.items())):
        ax.axis("on")
        ax.barh(list(d), list(d.values()), color="C0")
        ax.set_title(c, fontsize=8)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def write_card(folder: Path, stats: dict, name: str, version: int, provenance: dict) -> Path:
    """Write stats.json and card/README.md (+ attributes.png) into the snapshot folder."""
    (folder / "stats.json").write_text(json.dumps({"version": version, **stats, "provenance": provenance},
                                                  indent=1, sort_keys=True))
    card = folder / "card"
    card.mkdir(exist_ok=True)
    (card / "attributes.png").write_bytes(_plot_distributions(stats))
    h, w = stats["mean_height"], stats["mean_width"]
    table1 = markdown_table([(f"{name} {version}", stats["images"], f"{h or 0:.0f} x {w or 0:.0f}",
                              stats["categories"], stats["attributes"], stats["mean_quality"], stats["mean_face_quality"])],
                            ["dataset", "images", "mean resolution (h x w)", "categories", "attributes",
                             "mean quality", "mean face quality"])
    mix = markdown_table([(k, v, f"{v / max(1, stats['images']):.1%}") for k, v in stats["person_types"].items()],
                         ["person type", "images", "share"])
    sources = markdown_table([(k, v) for k, v in stats["sources"].items()], ["source", "images"])
    licences = markdown_table([(k, v) for k, v in stats["licences"].items()], ["licence", "images"])
    parsing = stats.get("parsing_by_source", {})
    parsing_table = markdown_table([(src, sum(d["maps"].values()), d["maps"].get("source", 0), d["maps"].get("segformer", 0),
                                     d["maps"].get("fallback", 0), f"{d['fallback_share']:.1%}") for src, d in parsing.items()],
                                   ["image source", "images", "shipped maps", "segformer", "geometry fallback", "fallback share"])
    text = f"""# {name} {version}

Human images with 18-class parsing maps, protocol answers and grouped captions, packed as
webdataset tar shards ({stats['shards']} shards) with one Parquet manifest per split.

## Statistics (CosmicMan Table 1 terms)

{table1}

Splits: {', '.join(f'{k} {v}' for k, v in stats['split_counts'].items())} (stable by image content hash).

## Person types

{mix}

## Parsing maps (HOLA's masks)

{parsing_table}

A geometry fallback map (no parsing weights) is coarse: HOLA training refuses a snapshot whose
share of them is above `training.max_fallback_parsing`.

## Attribute distributions

![answers per category](attributes.png)

## Provenance

{sources}

{licences}

```json
{json.dumps(provenance, indent=1, sort_keys=True)}
```

## Loading

    dvc get <registry> {name} --rev {name}-v{version} -o {name}-v{version}
    python -c "from flywheel.snapshot.loader import open_snapshot; print(open_snapshot('{name}-v{version}'))"

Quality scores: PIQE-derived, higher is better. Licence and attribution travel per sample
in the manifests and in each sample's JSON member.
"""
    path = card / "README.md"
    path.write_text(text)
    return path
