"""The evaluation report: one self-contained HTML page (images inlined) and the same numbers as JSON.

The page puts one model (``highlight``) next to the base model and the other variants: the
metric table, the judge's own accuracy, the champion decisions, image grids with the same
prompts and seeds side by side, attention-map overlays, per-category accuracy bars, and
everything that was skipped with the reason. It needs no network and no script.
"""

from __future__ import annotations

import base64
import html
import math

from evaluation.run import ModelEvaluation
from flywheel.preview import png_bytes

# (metric key, column title, True if higher is better); Acc_* by the truth judge, "ann." by the annotator judge
COLUMNS = [("acc_all", "Acc_all", True), ("acc_object", "Acc_obj", True), ("acc_texture", "Acc_tex", True),
           ("acc_shape", "Acc_shape", True), ("annotator_acc_all", "Acc_all (ann.)", True),
           ("attention_iou", "Attn IoU", True), ("attention_iou_body", "IoU body", True),
           ("attention_iou_outfit", "IoU outfit", True), ("piqe", "PIQE", False), ("liqe", "LIQE", True),
           ("musiq", "MUSIQ", True), ("fid", "FID", False), ("kid", "KID", False), ("fd_truth", "FD_truth", False),
           ("kid_truth", "KID_truth", False), ("fd_judge", "FD_judge", False), ("kid_judge", "KID_judge", False), ("clipscore", "CLIPScore", True), ("pickscore", "PickScore", True),
           ("hpsv2", "HPSv2", True)]
_SKIP_KEYS = {"acc_all": "semantic_accuracy", "acc_object": "semantic_accuracy", "acc_texture": "semantic_accuracy",
              "acc_shape": "semantic_accuracy", "annotator_acc_all": "annotator_semantic_accuracy", "attention_iou": "attention_iou", "attention_iou_body": "attention_iou",
              "attention_iou_outfit": "attention_iou", "fd_judge": "fd_kid", "kid_judge": "fd_kid",
              "fd_truth": "fd_kid", "kid_truth": "fd_kid"}

CSS = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}table{border-collapse:collapse;margin:8px 0 20px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right;font-size:13px}th{background:#f3f3f3}
td.name,th.name{text-align:left}tr.highlight td{background:#fff7d6;font-weight:600}.nc{color:#999}
.best{color:#0a6b2b}.warn{background:#fde8e8;border:1px solid #e99;padding:8px;margin:8px 0}
.grid td{padding:2px;text-align:center}.grid img{image-rendering:pixelated;width:96px}.caption{max-width:360px;text-align:left;font-size:12px}
img.att{image-rendering:pixelated;height:240px}h2{margin-top:28px}"""


def _img(png: bytes, cls: str = "", title: str = "") -> str:
    return (f'<img class="{cls}" title="{html.escape(title)}" alt="{html.escape(title)}" '
            f'src="data:image/png;base64,{base64.b64encode(png).decode()}">')


def _fmt(v: float) -> str:
    return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"


def report_json(snapshot: dict, evaluations: list[ModelEvaluation], judge: dict, annotator_judge: dict,
                champions: list[dict], skipped: dict[str, str], prompts: list[dict], settings: dict) -> dict:
    """``judge``: the truth judge (the Acc_* columns); ``annotator_judge``: the flywheel's annotator."""
    return {"snapshot": snapshot, "settings": settings, "judge": judge, "annotator_judge": annotator_judge,
            "champions": champions, "skipped": skipped, "prompts": prompts, "models": [e.to_json() for e in evaluations]}


def _metric_table(data: dict, highlight: str | None) -> str:
    models = data["models"]
    cols = [c for c in COLUMNS if any(c[0] in m["metrics"] for m in models)
            or c[0] in ("acc_all", "annotator_acc_all", "attention_iou", "piqe", "clipscore")]
    head = "".join(f'<th title="{"higher" if hi else "lower"} is better">{t} {"↑" if hi else "↓"}</th>' for _, t, hi in cols)
    rows = []
    for m in models:
        cells = []
        for key, _, hi in cols:
            v = m["metrics"].get(key)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                why = (m["skipped"].get(_SKIP_KEYS.get(key, key)) or m["skipped"].get("evaluation")
                       or data["skipped"].get(key) or "not computed")
                cells.append(f'<td class="nc" title="{html.escape(why)}">not computed</td>')
                continue
            values = [x["metrics"][key] for x in models if isinstance(x["metrics"].get(key), (int, float))]
            best = (max if hi else min)(values) if len(set(values)) > 1 else None  # no winner in a tie
            ci = ""
            if f"{key}_ci_low" in m["metrics"]:
                ci = f' <small>[{m["metrics"][f"{key}_ci_low"]:.3f}, {m["metrics"][f"{key}_ci_high"]:.3f}]</small>'
            cells.append(f'<td class="{"best" if best is not None and v == best else ""}">{_fmt(v)}{ci}</td>')
        name = m["label"] + (f' <small>({m["registered_model"]} v{m["version"]})</small>' if m["version"] else "")
        cls = ' class="highlight"' if m["key"] == highlight else ""
        rows.append(f'<tr{cls}><td class="name">{name}</td>{"".join(cells)}</tr>')
    return f'<table id="metrics"><tr><th class="name">model</th>{head}</tr>{"".join(rows)}</table>'


def _calibration_table(table_id: str, title: str, judge: dict) -> str:
    rows = []
    for mode, m in judge["calibration"].items():
        acc = m.get("acc_all")
        cells = (f'<td>{acc:.3f} <small>[{m["acc_all_ci_low"]:.3f}, {m["acc_all_ci_high"]:.3f}]</small></td>'
                 if acc is not None else '<td class="nc">not computed</td>')
        rows.append(f'<tr><td class="name">{html.escape(mode.replace("_", " "))}</td>{cells}</tr>')
    return (f'<table id="{table_id}"><tr><th class="name">{html.escape(title)}</th><th>Acc_all [95% CI]</th></tr>'
            f'{"".join(rows)}</table>')


def judge_trust(judge: dict, mode: str) -> float | None:
    """A judge's Acc_all on real synthetic images in calibration ``mode`` (None: not measured)."""
    return judge.get("calibration", {}).get(mode, {}).get("acc_all")


def _judge_block(judge: dict, mode: str, threshold: float, name: str, columns: str, about: str, measured_on: str,
                 table_id: str, table_title: str) -> str:
    """One judge: what it is, a warning when its ``mode`` accuracy is below ``threshold``, its calibration table."""
    if not judge.get("calibration"):
        return f'<p class="warn">{columns} not computed: {html.escape(judge.get("note", "no " + name))}</p>'
    acc = judge_trust(judge, mode)
    warn = "" if acc is not None and acc >= threshold else (
        f'<p class="warn">The {name} scores {"?" if acc is None else f"{acc:.3f}"} Acc_all on {measured_on} '
        f'(below {threshold:.2f}): treat {columns} as indicative only.</p>')
    return (f'<p><b>{columns}</b>: {html.escape(judge.get("identity", ""))}; {about}{html.escape(judge.get("note", ""))}</p>'
            f'{warn}{_calibration_table(table_id, table_title, judge)}')


def _judge_section(judge: dict, annotator: dict) -> str:
    threshold = judge.get("threshold", 0.85)
    return (_judge_block(judge, "degraded", threshold, "truth judge", "Acc_*, FD_truth, KID_truth", "",
                         "degraded real renders", "judge", "real renders at the generator's size, as rendered / degraded")
            + _judge_block(annotator, "source_parsing", threshold, "annotator judge", "Acc_all (ann.), FD_judge, KID_judge",
                           "the flywheel's annotator, which wrote the training captions (what a user without ground "
                           "truth has). ", "real images with their own maps", "annotator-judge",
                           "real synthetic images, parsed with"))


def _category_bars(models: list[dict]) -> str:
    cats = sorted({c for m in models for c in m["per_category"]})
    if not cats:
        return '<p class="nc">no per-category accuracy (semantic accuracy not computed)</p>'
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
    bar, gap, label_w, width = 7, 6, 120, 300
    group = bar * len(models) + gap
    height = group * len(cats) + 30
    parts = [f'<svg id="category-bars" xmlns="http://www.w3.org/2000/svg" width="{label_w + width + 40}" height="{height}">']
    for i, c in enumerate(cats):
        y = 20 + i * group
        parts.append(f'<text x="{label_w - 4}" y="{y + bar * len(models) / 2 + 4}" font-size="11" text-anchor="end">{c}</text>')
        for j, m in enumerate(models):
            v = m["per_category"].get(c)
            if v is not None:
                parts.append(f'<rect x="{label_w}" y="{y + j * bar}" width="{v * width:.1f}" height="{bar - 1}" '
                             f'fill="{palette[j % len(palette)]}"><title>{html.escape(m["label"])} {c}: {v:.2f}</title></rect>')
    for j, m in enumerate(models):
        parts.append(f'<rect x="{label_w + j * 110}" y="2" width="10" height="10" fill="{palette[j % len(palette)]}"/>'
                     f'<text x="{label_w + j * 110 + 14}" y="11" font-size="11">{html.escape(m["label"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _kosmos_section(k: dict | None) -> str:
    """KOSMOS-G's subject figures (from its stage-3 run), or why there are none."""
    if not k or "scores" not in k:
        note = (k or {}).get("note", "not part of this evaluation")
        return f'<p class="nc" id="kosmos-g">{html.escape(note)}</p>'
    sc = k["scores"]
    rows = [("garment colour, judged (chance ~0.125)", "colour_accuracy", "judge"),
            ("garment type, judged", "type_accuracy", "judge"),
            ("CLIP-I vs the reference crop on another person", "clip_i", "clip_i"),
            ("CLIP-T vs the garment's words", "clip_t", "clip_i"), ("DINO vs the reference crop", "dino", "dino")]
    cells = [f'<tr><td class="name">garments generated</td><td>{sc.get("garments", sc.get("images", 0))}</td></tr>']
    for name, key, reason in rows:
        v = sc.get(key)
        value = (_fmt(v) if v is not None else
                 "not computed: " + html.escape(sc.get("not_computed", {}).get(reason, "no value")))
        cells.append(f'<tr><td class="name">{html.escape(name)}</td><td{" class=nc" if v is None else ""}>{value}</td></tr>')
    samples = ""
    if k.get("samples_path"):
        with open(k["samples_path"], "rb") as f:
            samples = "<p>Garment crops (top row) and what was generated from each (below):</p>" + _img(f.read(), "att", "KOSMOS-G samples")
    return (f'<p id="kosmos-g">{html.escape(k["registered_model"])} version {html.escape(str(k["version"]))} (run '
            f'{html.escape(k["run_id"])}): "a person wearing &lt;garment image&gt;" for held-out garments, sampled with '
            f'the base\'s frozen UNet. Judge: {html.escape(str(sc.get("judge", "none")))}; generated images are outside '
            f'its training distribution.</p><table>{"".join(cells)}</table>{samples}')


def render_html(data: dict, evaluations: list[ModelEvaluation], highlight: str | None = None, grid_prompts: int = 8) -> str:
    snap = data["snapshot"]
    title = f"CosmicMan evaluation: {snap.get('tag')}" + (f" · {highlight}" if highlight else "")
    seeds = data["settings"].get("seeds", [0])
    n = min(grid_prompts, len(data["prompts"]))
    grid = ['<table class="grid" id="grids"><tr><th class="name">prompt (seeds ' + ", ".join(map(str, seeds)) + ")</th>"
            + "".join(f"<th>{html.escape(e.label)}</th>" for e in evaluations) + "</tr>"]
    for i in range(n):
        cells = []
        for e in evaluations:
            imgs = e.images[i * len(seeds):(i + 1) * len(seeds)] if e.images is not None else []
            cells.append("<td>" + "".join(_img(png_bytes(im), title=f"{e.label} seed {sd}") for im, sd in zip(imgs, seeds)) + "</td>")
        grid.append(f'<tr><td class="caption">{html.escape(data["prompts"][i]["caption"])}</td>{"".join(cells)}</tr>')
    grid.append("</table>")
    if n == 0:
        grid = ['<p class="nc" id="grids">no image grid: the prompt set is empty</p>']
    attention = "".join(f"<h3>{html.escape(e.label)}</h3>" + (_img(e.attention_png, "att", f"{e.label} attention")
                        if e.attention_png else '<p class="nc">not computed</p>') for e in evaluations)
    champions = "".join(f"<li><b>{html.escape(c['registered_model'])}@{html.escape(c.get('alias', 'champion'))}</b>: {html.escape(c['reason'])}</li>" for c in data["champions"])
    skipped = [f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in data["skipped"].items()]
    for m in data["models"]:
        skipped += [f"<li>{html.escape(m['label'])} · {html.escape(k)}: {html.escape(v)}</li>" for k, v in m["skipped"].items()]
    no_vae = [m["label"] for m in data["models"] if not m["has_vae"]]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Snapshot {html.escape(str(snap.get('tag')))} (data hash {html.escape(str(snap.get('data_hash')))}),
{len(data['prompts'])} held-out prompts × {len(seeds)} seed(s), {data['settings'].get('steps')} DDIM steps,
guidance {data['settings'].get('guidance_scale')}.{' Pixel-space models (no VAE): ' + html.escape(', '.join(no_vae)) + '.' if no_vae else ''}</p>
<h2>Metrics</h2>{_metric_table(data, highlight)}
<h2>Judges</h2>{_judge_section(data['judge'], data.get('annotator_judge', {}))}
<h2>Champion</h2><ul id="champions">{champions or '<li class="nc">no registered model evaluated</li>'}</ul>
<h2>Samples (same prompts and seeds)</h2>{''.join(grid)}
<h2>Attention maps</h2><p>One held-out sample: the image, then per caption group its mask (top row), the group's
mean cross-attention map (middle) and the map overlaid on the image (bottom).</p>{attention}
<h2>Per-category accuracy (truth judge)</h2>{_category_bars(data['models'])}
<h2>KOSMOS-G (subject-driven generation)</h2>{_kosmos_section(data.get('kosmos_g'))}
<h2>Skipped</h2><ul id="skipped">{''.join(skipped) or '<li>nothing</li>'}</ul>
</body></html>"""

