"""Stage 2 of KOSMOS-G: image decoder aligning on text-only captions.

Only AlignerNet trains: the source model S is frozen and so is the UNet's text encoder, whose
last hidden state of the caption (what the UNet was trained to read) is the target. Measures:
R² of the aligned embeddings against the text encoder's on held-out captions, and caption
retrieval (the aligned embedding of a caption should be nearest, by mean-pooled cosine, to the
text encoder's embedding of the same caption among a pool of others).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from training.kosmos.aligner import AlignerNet, r_squared
from training.kosmos.interleaved import parse


def protocol_captions(protocol, count: int, seed: int) -> list[str]:
    """Dense protocol captions of random people (the renderer's answer sampler, no rendering)."""
    from flywheel.annotation.captions import caption_groups, join_caption
    from flywheel.synthetic.attributes import sample_answers

    rng = np.random.default_rng(seed)
    return [join_caption(caption_groups(protocol, sample_answers(rng, protocol), seed=seed + i)) for i in range(count)]


@torch.no_grad()
def text_targets(base, captions: Sequence[str]) -> torch.Tensor:
    """The UNet's text conditioning of each caption: (B, 77, d_t)."""
    from training.sampling import tokenize

    return base.text_encoder(tokenize(base.tokenizer, captions))[0]


def source_embeddings(source, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return source.embed([parse(c) for c in captions])


def align_step(source, aligner: AlignerNet, base, captions: Sequence[str]) -> dict:
    s, pad = source_embeddings(source, captions)
    return aligner(s, text_targets(base, captions), pad)


def train_alignment(source, aligner: AlignerNet, base, captions: Sequence[str], steps: int, batch_size: int = 32,
                    lr: float = 1e-3, seed: int = 0, on_log: Callable[[int, dict], None] | None = None) -> dict:
    """AlignerNet only (the paper: S frozen in stage 2); returns the last step's losses."""
    for module in (source, base.text_encoder):
        for p in module.parameters():
            p.requires_grad_(False)
    opt = torch.optim.AdamW(aligner.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(seed)
    last = {}
    aligner.train()
    for step in range(1, steps + 1):
        batch = [captions[i] for i in rng.choice(len(captions), min(batch_size, len(captions)), replace=False)]
        out = align_step(source, aligner, base, batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(aligner.parameters(), 1.0)
        opt.step()
        sched.step()
        last = {"mse": out["mse"].item(), "rec": out["rec"].item(), "lr": sched.get_last_lr()[0]}
        if on_log:
            on_log(step, last)
    aligner.eval()
    return last


@torch.no_grad()
def alignment_scores(source, aligner: AlignerNet, base, captions: Sequence[str], batch_size: int = 50) -> dict:
    """R² of M(S(c)) against the text encoder's embedding over held-out captions, and top-1 caption
    retrieval among them (mean-pooled cosine over the unpadded text positions)."""
    aligned, target, lengths = [], [], []
    for i in range(0, len(captions), batch_size):
        batch = list(captions[i:i + batch_size])
        s, pad = source_embeddings(source, batch)
        aligned.append(aligner.encode(s, pad))
        target.append(text_targets(base, batch))
        ids = base.tokenizer(batch, truncation=True, max_length=base.tokenizer.model_max_length).input_ids
        lengths += [len(x) for x in ids]
    a, t = torch.cat(aligned), torch.cat(target)
    keep = (torch.arange(t.shape[1])[None] < torch.tensor(lengths)[:, None]).float()[..., None]
    pooled_a = torch.nn.functional.normalize((a * keep).sum(1) / keep.sum(1), dim=-1)
    pooled_t = torch.nn.functional.normalize((t * keep).sum(1) / keep.sum(1), dim=-1)
    top1 = float((pooled_a @ pooled_t.T).argmax(1).eq(torch.arange(len(a))).float().mean())
    text = keep[..., 0].bool()
    return {"r2": r_squared(a, t), "r2_text_positions": r_squared(a[text], t[text]), "retrieval_top1": top1, "captions": len(a)}
