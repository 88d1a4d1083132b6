"""The embedded base's model card (``README.md`` in its folder): recipe, cost, figures.

Written by ``pretrain-base`` from the settings and wall times; the benchmark's figures
(:mod:`benchmarks.base_model`) are added between markers so a rerun replaces them.
"""

from __future__ import annotations

import json
from pathlib import Path

FIGURES_BEGIN, FIGURES_END = "<!-- benchmark figures: begin -->", "<!-- benchmark figures: end -->"
NOTES_BEGIN, NOTES_END = "<!-- run notes: begin -->", "<!-- run notes: end -->"  # people's notes, kept on rewrite


def _between(text: str, begin: str, end: str) -> str | None:
    return text[text.index(begin):text.index(end) + len(end)] if begin in text and end in text else None


def notes_of(card: str) -> str:
    """The people's run notes of a model card (between the markers; '' when there are none)."""
    block = _between(card, NOTES_BEGIN, NOTES_END)
    return block[len(NOTES_BEGIN):-len(NOTES_END)].strip("\n") if block else ""


def _params(folder: Path, part: str) -> int:
    from safetensors.torch import load_file

    return sum(t.numel() for f in sorted((folder / part).glob("*.safetensors")) for t in load_file(f).values())


def write_card(folder: Path, settings: dict, seconds: dict[str, float], scaling_factor: float, notes: str = "") -> Path:
    folder = Path(folder)
    s = settings
    sizes = {p: _params(folder, p) for p in ("vae", "text_encoder", "unet")}
    mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
    c, v, k, u = s["corpus"], s["vae"], s["clip"], s["unet"]
    old = (folder / "README.md").read_text() if (folder / "README.md").exists() else ""
    figures = _between(old, FIGURES_BEGIN, FIGURES_END) or \
        f"{FIGURES_BEGIN}\n(not measured yet: run `python benchmarks/base_model.py`)\n{FIGURES_END}"
    notes = f"{NOTES_BEGIN}\n{notes}\n{NOTES_END}" if notes else (_between(old, NOTES_BEGIN, NOTES_END) or "")
    pooled = ", plus the attention-pooled prompt added to the timestep embedding (`addition_embed_type=\"text\"`)" \
        if u.get("text_time_embedding") else ""
    joint_lr = u.get("text_encoder_lr")
    then_joint = ", then trained with the UNet" if joint_lr else ""
    contrastive = u.get("contrastive_weight") if joint_lr else 0
    schedule = (f", then a cosine decay to {u.get('min_lr_ratio')} x lr over the last run's steps"
                if u.get("lr_schedule") == "cosine" else "")
    clip_saved = (f"with {contrastive} x CLIP's loss against the vision tower beside the diffusion loss; "
                  "`../embedded-base-clip/` is that pair") if contrastive else "`../embedded-base-clip/` keeps the contrastive one"
    text_encoder_recipe = f"the text encoder trained with it at lr {joint_lr} (its EMA saved; {clip_saved})" \
        if joint_lr else "text encoder frozen"
    text = f"""# Embedded base model (the project's Stable Diffusion 1.5 stand-in)

A `StableDiffusionPipeline` directory (diffusers layout: `model_index.json`, `vae/`, `unet/`,
`text_encoder/`, `tokenizer/`, `scheduler/`, safetensors), pretrained by this project with
`cosmicman pretrain-base` on two CPU cores, and loaded by the same code as a real SD 1.5
directory. Every file but this card is listed in `checksums.sha256` and checked at load.
`../embedded-base-clip/` is the whole CLIP model (text and vision towers) it was trained with.

| part | what | parameters |
| --- | --- | --- |
| vae | `AutoencoderKL`, channels {tuple(v["block_out_channels"])}, {v["latent_channels"]} latent channels, scaling factor {scaling_factor:.4f} | {sizes["vae"] / 1e6:.2f} M |
| text_encoder | `CLIPTextModel`, width {k["hidden_size"]}, {k["layers"]} layers, trained contrastively (CLIP loss) against a ViT of width {k["vision_hidden"]}, {k["vision_layers"]} layers at {k["vision_size"]}x{k["vision_size"]}{then_joint} | {sizes["text_encoder"] / 1e6:.2f} M |
| tokenizer | `CLIPTokenizer` (BPE, `vocab.json` + `merges.txt`) learned from the corpus and protocol vocabulary | - |
| unet | `UNet2DConditionModel` on {c["height"] // 2 ** (len(v["block_out_channels"]) - 1)}x{c["width"] // 2 ** (len(v["block_out_channels"]) - 1)} latents, channels {tuple(u["block_out_channels"])}, blocks {", ".join(u["down_block_types"])}{pooled} | {sizes["unet"] / 1e6:.2f} M |
| scheduler | `DDPMScheduler`, 1000 steps, {u["beta_schedule"]}, {u["prediction_type"]} prediction | - |

Images: {c["height"]}x{c["width"]} (height x width). Files: {mb:.1f} MB.

## Recipe
- **Corpus (the LAION analogue):** {c["count"]} clean renders of the synthetic source, seed {c["seed"]} (no snapshot
  uses it), drawn at {c["render_scale"]}x and area-downscaled; shots {json.dumps(c["person_type_weights"])}.
- **Weak captions:** {json.dumps(c["captions"])}; alt-text phrasings, no part hierarchy. The CosmicMan-HQ
  fine-tune's dense, exact captions have the rest to add.
- **VAE:** {v["steps"]} steps x batch {v["batch_size"]} on {v["crop"][0]}x{v["crop"][1]} crops, AdamW lr {v["lr"]}, L1 + MSE + {v["kl_weight"]} KL.
- **CLIP:** {k["steps"]} steps x batch {k["batch_size"]}, AdamW lr {k["lr"]}, captions cut to {k["max_tokens"]} tokens.
- **UNet:** {u["steps"]} steps x batch {u["batch_size"]} on cached latents, AdamW lr {u["lr"]} ({u["warmup_steps"]} warm-up steps{schedule}),
  {text_encoder_recipe}, {u["caption_dropout"]:.0%} captions dropped, Min-SNR-{u["snr_gamma"]}, EMA {u["ema_decay"]} (the saved weights).
- Seed {s["seed"]}. The full settings are in `pretrain_settings.json`.

## Cost (wall time on the 2-core development machine, CPU only)
{chr(10).join(f"- {name}: {sec / 60:.1f} min" for name, sec in seconds.items())}
- total: {sum(seconds.values()) / 60:.1f} min

## Figures
{figures}
{notes}"""
    (folder / "README.md").write_text(text)
    return folder / "README.md"


def write_figures(folder: Path, figures: str) -> None:
    """Replace the card's benchmark section with ``figures`` (Markdown)."""
    card = Path(folder) / "README.md"
    text = card.read_text()
    block = f"{FIGURES_BEGIN}\n{figures.strip()}\n{FIGURES_END}"
    if FIGURES_BEGIN in text:
        text = text[:text.index(FIGURES_BEGIN)] + block + text[text.index(FIGURES_END) + len(FIGURES_END):]
    else:
        text += "\n## Figures\n" + block + "\n"
    card.write_text(text)
