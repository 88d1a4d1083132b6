"""CLIP for the embedded base: a BPE tokenizer from the corpus vocabulary, and a text
encoder trained contrastively against a small vision tower on the corpus (CLIP's loss).

The tokenizer is CLIP's format (``vocab.json`` + ``merges.txt``: byte-level symbols, ``</w>``
word ends, ``<|startoftext|>`` / ``<|endoftext|>``), trained offline so every corpus and
protocol word is one token and any other word still splits into known pieces, and it
loads with ``CLIPTokenizer`` like SD 1.5's. The contrastive stage teaches the text encoder
what colour, garment and shot words look like before the UNet ever reads its states (the
tiny models trained from a random encoder ignored the colour word). The whole ``CLIPModel``
is saved too, as the embedded CLIPScore backend.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTokenizer,
    CLIPVisionConfig,
)

from training.pretrain.settings import ClipSettings

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# CLIP's pre-tokenization: words, digits one by one, runs of other symbols (lower-cased)
_CLIP_PAT = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+""")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte-to-symbol table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def build_clip_tokenizer(texts: Iterable[str], folder: Path, max_length: int = 77) -> CLIPTokenizer:
    """Learn BPE merges until every word of ``texts`` is one token; write and load CLIP's files."""
    table = bytes_to_unicode()
    counts: dict[tuple[str, ...], int] = {}
    for text in texts:
        for word in _CLIP_PAT.findall(text.lower()):
            symbols = [table[b] for b in word.encode("utf-8")]
            symbols[-1] += "</w>"
            counts[tuple(symbols)] = counts.get(tuple(symbols), 0) + 1
    merges: list[tuple[str, str]] = []
    words = dict(counts)
    while True:
        pairs: dict[tuple[str, str], int] = {}
        for w, c in words.items():
            for a, b in itertools.pairwise(w):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        best = max(pairs, key=lambda p: (pairs[p], p))  # ties broken by the pair itself: deterministic
        merges.append(best)
        merged = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged[tuple(out)] = c
        words = merged
    symbols = list(table.values())
    vocab = symbols + [s + "</w>" for s in symbols]
    seen = set(vocab)
    for a, b in merges:
        if a + b not in seen:
            vocab.append(a + b)
            seen.add(a + b)
    vocab += [BOS, EOS]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length,
                        pad_token=EOS)
    tok.save_pretrained(folder)
    return tok




def build_clip(s: ClipSettings, tokenizer: CLIPTokenizer) -> CLIPModel:
    text = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=s.hidden_size, intermediate_size=4 * s.hidden_size,
                          num_hidden_layers=s.layers, num_attention_heads=s.heads, max_position_embeddings=77,
                          projection_dim=s.projection_dim, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = CLIPVisionConfig(image_size=s.vision_size, patch_size=s.vision_patch, hidden_size=s.vision_hidden,
                              intermediate_size=4 * s.vision_hidden, num_hidden_layers=s.vision_layers,
                              num_attention_heads=4, projection_dim=s.projection_dim)
    return CLIPModel(CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=s.projection_dim))


# CLIP's normalisation constants: the saved processor uses them, so training must too
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)


def vision_inputs(images: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return (x - CLIP_MEAN) / CLIP_STD


def train_clip_steps(model: CLIPModel, optimizer, tokenizer, images: np.ndarray, captions: list[str], s: ClipSettings,
                     start: int, stop: int, generator: torch.Generator, on_log=None) -> None:
    model.train()
    for step in tqdm(range(start, stop), desc="clip", initial=start, total=s.steps):
        idx = torch.randint(0, len(images), (s.batch_size,), generator=generator).numpy()
        enc = tokenizer([captions[i] for i in idx], padding="max_length", truncation=True, max_length=s.max_tokens,
                        return_tensors="pt")
        out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                    pixel_values=vision_inputs(images[idx], s.vision_size), return_loss=True)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if on_log:
            acc = (out.logits_per_image.argmax(1) == torch.arange(len(idx))).float().mean().item()
            on_log(step + 1, {"loss": out.loss.item(), "batch_accuracy": acc})


class ContrastiveTerm:
    """CLIP's loss kept beside the diffusion loss while the text encoder trains with the UNet.

    The diffusion loss alone lets the text encoder merge words whose difference the UNet does not use
    yet (at 10,200 steps "headshot" and "upper-body shot" had drifted together and sampled the same
    image). The vision tower sees the framing at once, so the contrastive pull keeps such words apart.
    It scores the live text encoder's pooled state, through CLIP's projections, against the vision tower
    on the same images the UNet step drew; the vision tower and both projections train with it.
    """

    def __init__(self, clip: CLIPModel, images: np.ndarray, vision_size: int, weight: float):
        self.clip, self.images, self.vision_size, self.weight = clip, images, vision_size, weight

    def parameters(self) -> list[torch.nn.Parameter]:
        c = self.clip
        return [*c.vision_model.parameters(), *c.visual_projection.parameters(), *c.text_projection.parameters(),
                c.logit_scale]

    def train(self, on: bool) -> None:
        self.clip.train(on)
        for p in self.parameters():
            p.requires_grad_(on)

    def loss(self, pooled: torch.Tensor, idx: np.ndarray, keep: torch.Tensor) -> torch.Tensor:
        """``pooled``: the text encoder's pooled states for the images ``idx``; ``keep``: the captions not dropped."""
        if int(keep.sum()) < 2:
            return pooled.new_zeros(())
        c = self.clip
        text = F.normalize(c.text_projection(pooled[keep]), dim=-1)
        pixels = vision_inputs(self.images[idx[keep.numpy()]], self.vision_size)
        image = F.normalize(c.visual_projection(c.vision_model(pixel_values=pixels).pooler_output), dim=-1)
        logits = c.logit_scale.exp() * text @ image.T
        labels = torch.arange(len(logits))
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def hidden_state_distance(text_encoder, tokenizer, a: list[str], b: list[str]) -> float:
    """Mean distance between the per-token hidden states of prompts ``a[i]`` and ``b[i]`` (the measure
    behind the shot diagnosis: headshot vs upper-body prompts)."""
    with torch.no_grad():
        ids = tokenizer(a + b, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                        return_tensors="pt").input_ids
        h = text_encoder(ids)[0]
    return float((h[:len(a)] - h[len(a):]).norm(dim=-1).mean())
