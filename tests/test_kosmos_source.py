"""KOSMOS-G's interleaved prompts and the tiny source model: parsing with clear errors, sequence
layout, image tokens that carry the image, a frozen image tower, and stage-1 LM learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.kosmos.interleaved import ImageSegment, InterleavedPromptError, parse
from training.kosmos.source import TinySourceConfig, TinySourceModel

CLIP = Path(__file__).parents[1] / "models" / "embedded-base-clip"


def _image(colour) -> np.ndarray:
    return np.full((40, 24, 3), colour, np.uint8)


def test_a_prompt_parses_into_ordered_segments_and_bad_ones_are_named(tmp_path):
    from PIL import Image

    path = tmp_path / "jacket.png"
    Image.fromarray(_image((200, 20, 20))).save(path)
    segments = parse("a woman wearing <image> on a beach", [path])
    assert segments[0] == "a woman wearing " and isinstance(segments[1], ImageSegment) and segments[2] == " on a beach"
    assert segments[1].pixels.shape == (40, 24, 3) and segments[1].source == str(path)
    with pytest.raises(InterleavedPromptError, match=r"'a <image> and <image>': 2 <image> placeholder\(s\) but 1 image"):
        parse("a <image> and <image>", [path])
    with pytest.raises(InterleavedPromptError, match="0 <image> placeholder"):
        parse("a woman", [path])
    with pytest.raises(InterleavedPromptError, match="missing.png does not exist"):
        parse("a <image>", [tmp_path / "missing.png"])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(InterleavedPromptError, match="broken.png is not a readable image"):
        parse("a <image>", [tmp_path / "broken.png"])
    with pytest.raises(InterleavedPromptError, match=r"\(H, W, 3\) uint8"):
        parse("a <image>", [np.zeros((4, 4), np.float32)])


def test_the_sequence_holds_text_tokens_and_resampled_image_tokens_in_order():
    torch.manual_seed(0)
    model = TinySourceModel.from_clip(CLIP, TinySourceConfig(image_tokens=4))
    red, blue = parse("a woman wearing <image>", [_image((220, 20, 20))]), parse("a woman wearing <image>", [_image((20, 20, 220))])
    text = parse("a man")
    x, pad, labels = model.sequences([red, text])
    n_text = len(model.tokenizer("a woman wearing ", add_special_tokens=False).input_ids)
    assert x.shape == (2, 1 + n_text + 4 + 1, model.width) and pad[0].sum() == 0
    assert pad[1].sum() == x.shape[1] - (2 + len(model.tokenizer("a man", add_special_tokens=False).input_ids))
    assert (labels[0, 1 + n_text:1 + n_text + 4] == -100).all()  # image positions are never predicted
    with torch.no_grad():
        h_red, _ = model.embed([red])
        h_blue, _ = model.embed([blue])
    assert torch.allclose(h_red[0, :1 + n_text], h_blue[0, :1 + n_text], atol=1e-5)  # causal: text before the image
    assert not torch.allclose(h_red[0, -1], h_blue[0, -1], atol=1e-3)  # the image reaches what follows it
    assert not any(p.requires_grad for p in model.vision.parameters())


def test_stage1_language_modelling_loss_decreases_on_captions():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = TinySourceModel.from_clip(CLIP, TinySourceConfig(layers=2))
    captions = [parse(c) for c in ("a woman, red t-shirt, blue pants", "a man, green t-shirt, black pants",
                                   "a woman wearing a yellow dress", "a man with a hat")]
    before = {k: v.clone() for k, v in model.vision.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)  # every parameter offered: the frozen tower must not move
    first = model.lm_loss(captions).item()
    for _ in range(60):
        loss = model.lm_loss(captions)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    assert all(torch.equal(v, model.vision.state_dict()[k]) for k, v in before.items())


def test_stage2_trains_only_the_aligner_towards_the_unets_text_conditioning(protocol):
    from training.base_model import load_base
    from training.kosmos.align import (
        alignment_scores,
        protocol_captions,
        text_targets,
        train_alignment,
    )
    from training.kosmos.aligner import AlignerConfig, AlignerNet

    torch.manual_seed(0)
    torch.set_num_threads(1)
    base = load_base(Path(__file__).parents[1] / "models" / "embedded-base")
    source = TinySourceModel.from_clip(CLIP, TinySourceConfig(layers=1)).eval()
    aligner = AlignerNet(AlignerConfig(128, base.text_encoder.config.hidden_size, max_source_len=128, layers=1, width=64, heads=4))
    captions = protocol_captions(protocol, 64, seed=1)
    assert len(set(captions)) > 50 and all(c for c in captions)
    frozen = [{k: v.clone() for k, v in m.state_dict().items()} for m in (source, base.text_encoder)]
    target = text_targets(base, captions[:8])
    start = alignment_scores(source, aligner, base, captions[:16])
    train_alignment(source, aligner, base, captions, steps=40, batch_size=8, lr=2e-3)
    end = alignment_scores(source, aligner, base, captions[:16])
    assert end["r2"] > start["r2"] + 0.2, (start, end)
    for before, module in zip(frozen, (source, base.text_encoder)):
        assert all(torch.equal(v, module.state_dict()[k]) for k, v in before.items())
    assert torch.equal(target, text_targets(base, captions[:8]))
