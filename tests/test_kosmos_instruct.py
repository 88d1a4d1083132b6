"""KOSMOS-G stage 3 and generation: garment crops and their references (kosmos_pairs), the compositional
prompts, instruction tuning that trains S and M only through a frozen UNet and VAE, and interleaved
generation that leaves the base's weights byte-identical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.training_samples import synthetic_samples
from training.kosmos.interleaved import ImageSegment, InterleavedPromptError
from training.kosmos.pairs import (
    GREY,
    SCHEMA,
    build_pairs,
    read_pairs,
    unpng,
    write_pairs,
)

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def samples(protocol):
    return synthetic_samples(protocol, seed=41, count=40)


@pytest.fixture(scope="module")
def pairs(samples, protocol):
    return build_pairs(samples, protocol)


def test_garments_are_cut_by_their_parsing_classes_and_referenced_on_another_sample(samples, pairs, protocol, tmp_path):
    by_key = {s.key: s for s in samples}
    parts = {r["part"] for r in pairs}
    assert {"top", "shoes"} <= parts and not parts & {"body", "face", "hair", "scene"}
    for r in pairs:
        smp, crop = by_key[r["key"]], unpng(r["crop_png"])
        x0, y0, x1, y1 = r["crop_box"]
        assert crop.shape == (y1 - y0, x1 - x0, 3)
        classes = protocol.parts[r["part"]].class_ids
        inside = np.isin(smp.parsing[y0:y1, x0:x1], classes)
        assert int(inside.sum()) == r["garment_pixels"] >= 24
        assert (crop[~inside] == GREY).all()  # nothing of the person or the scene
        assert np.array_equal(crop[inside], smp.image[y0:y1, x0:x1][inside])
    referenced = [r for r in pairs if r["reference_key"] is not None]
    assert len(referenced) > len(pairs) // 4
    rows = {(r["key"], r["part"]): r for r in pairs}
    for r in referenced:
        other = rows[(r["reference_key"], r["part"])]
        assert r["reference_key"] != r["key"] and other["signature_json"] == r["signature_json"]
        assert other["crop_png"] == r["reference_crop_png"]
    path = write_pairs(pairs, tmp_path / "kosmos_pairs.parquet")
    import pyarrow.parquet as pq

    assert pq.read_schema(path).equals(SCHEMA)
    assert read_pairs(path) == pairs
    pq.write_table(pq.read_table(path).drop(["crop_png"]), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=r"bad.parquet: not a kosmos_pairs table \(missing columns \['crop_png'\]\)"):
        read_pairs(tmp_path / "bad.parquet")


def test_the_compositional_prompt_puts_each_garments_image_after_its_words(samples, pairs, protocol):
    from training.kosmos.instruct import (
        InstructSettings,
        compositional_prompt,
        examples_from_pairs,
    )

    examples = examples_from_pairs(samples, pairs, (96, 64))
    assert examples and all(ex.image.shape == (96, 64, 3) for ex in examples)
    ex = max(examples, key=lambda e: len(e.crops))
    human = set(protocol.human_class_ids)
    rng = np.random.default_rng(0)
    full = compositional_prompt(ex, rng, InstructSettings(drop_entity_text=0.0, keep_background=1.0), human)
    images = [s for s in full if isinstance(s, ImageSegment)]
    assert len(images) == len(ex.crops)
    text = " ".join(s for s in full if isinstance(s, str))
    assert all(g["text"] in text for g in ex.groups)
    for i, seg in enumerate(full):  # each image right after its garment's words
        if isinstance(seg, ImageSegment):
            part = seg.source.removeprefix("crop:")
            words = next(g["text"] for g in ex.groups if g["part"] == part)
            assert isinstance(full[i - 1], str) and full[i - 1].endswith(words)
            assert np.array_equal(seg.pixels, ex.crops[part])
    bare = compositional_prompt(ex, rng, InstructSettings(drop_entity_text=1.0, keep_background=0.0), human)
    text = " ".join(s for s in bare if isinstance(s, str))
    garment_words = [g["text"] for g in ex.groups if g["part"] in ex.crops]
    scene = [g["text"] for g in ex.groups if not g["class_ids"]]
    assert sum(isinstance(s, ImageSegment) for s in bare) == len(ex.crops)
    assert not any(w in text for w in garment_words + scene)


@pytest.fixture(scope="module")
def kosmos(samples, pairs):
    from training.base_model import load_base
    from training.kosmos.aligner import AlignerConfig, AlignerNet
    from training.kosmos.instruct import examples_from_pairs
    from training.kosmos.source import TinySourceConfig, TinySourceModel

    torch.manual_seed(0)
    base = load_base(ROOT / "models" / "embedded-base")
    source = TinySourceModel.from_clip(ROOT / "models" / "embedded-base-clip", TinySourceConfig(width=32, layers=1))
    aligner = AlignerNet(AlignerConfig.preset("tiny", source.width, base.text_encoder.config.hidden_size,
                                              max_source_len=128, layers=1, width=32))
    return base, source, aligner, examples_from_pairs(samples, pairs, base.image_size)


def test_instruction_tuning_trains_s_and_m_only_through_the_frozen_unet_and_vae(kosmos, protocol):
    from training.kosmos.generate import weights_digest
    from training.kosmos.instruct import InstructSettings, train_instruct

    base, source, aligner, examples = kosmos
    frozen = {"unet": base.unet, "vae": base.vae, "text_encoder": base.text_encoder, "image tower": source.vision,
              "N": torch.nn.ModuleList([aligner.target_in, aligner.to_source, aligner.source_decoder, aligner.source_out])}
    before = {k: weights_digest(m) for k, m in frozen.items()}
    queries_n = aligner.queries_n.detach().clone()
    trained = {"S": source.blocks, "M": aligner.to_target}
    moved_before = {k: weights_digest(m) for k, m in trained.items()}
    losses: list[float] = []
    train_instruct(base, source, aligner, examples, InstructSettings(steps=3, batch_size=4, lr=1e-3),
                   protocol.human_class_ids, on_log=lambda step, m: losses.append(m["loss"]))
    assert len(losses) == 3 and all(np.isfinite(losses))
    assert {k: weights_digest(m) for k, m in frozen.items()} == before
    assert torch.equal(aligner.queries_n, queries_n)
    assert all(weights_digest(m) != moved_before[k] for k, m in trained.items())
    with pytest.raises(ValueError, match="no examples"):
        train_instruct(base, source, aligner, [], InstructSettings(steps=1), protocol.human_class_ids)


def test_stage_3_trains_s_even_after_stage_2_froze_it(kosmos, protocol):
    """Stage 2 freezes S (only AlignerNet aligns); stage 3 must train S again, as the paper and the public code do."""
    from training.kosmos.align import protocol_captions, train_alignment
    from training.kosmos.generate import weights_digest
    from training.kosmos.instruct import InstructSettings, train_instruct

    base, source, aligner, examples = kosmos
    train_alignment(source, aligner, base, protocol_captions(protocol, 8, seed=3), steps=1, batch_size=4)
    assert not any(p.requires_grad for p in source.blocks.parameters())
    before = weights_digest(source.blocks)
    train_instruct(base, source, aligner, examples, InstructSettings(steps=2, batch_size=4, lr=1e-3),
                   protocol.human_class_ids)
    assert weights_digest(source.blocks) != before
    assert not any(p.requires_grad for p in source.vision.parameters())


def test_interleaved_generation_samples_with_the_bases_unet_unchanged_and_rejects_bad_prompts(kosmos, pairs, tmp_path):
    from PIL import Image

    from training.kosmos.generate import KosmosGenerator, weights_digest

    base, source, aligner, _ = kosmos
    crop = unpng(next(r["crop_png"] for r in pairs if r["part"] == "top"))
    path = tmp_path / "top.png"
    Image.fromarray(crop).save(path)
    digest = weights_digest(base.unet)
    for aligned_null in (False, True):
        gen = KosmosGenerator(base, source, aligner, aligned_null=aligned_null)
        images = gen.generate([("a woman wearing <image>", [path]), "a man, blue t-shirt"], seeds=[0, 1], steps=2)
        assert images.shape == (2, *base.image_size, 3) and images.dtype == np.uint8 and images.std() > 0
    again = gen.generate([("a woman wearing <image>", [crop])], seeds=[0], steps=2)
    # a file and the same pixels as an array are the same input
    assert np.array_equal(gen.generate([("a woman wearing <image>", [path])], seeds=[0], steps=2), again)
    assert weights_digest(base.unet) == digest
    with pytest.raises(InterleavedPromptError, match="missing.png does not exist"):
        gen.generate([("a woman wearing <image>", [tmp_path / "missing.png"])], seeds=[0])
    with pytest.raises(InterleavedPromptError, match="1 <image> placeholder\\(s\\) but 0 image"):
        gen.generate(["a woman wearing <image>"], seeds=[0])
    with pytest.raises(ValueError, match="2 prompts but 1 seeds"):
        gen.generate(["a", "b"], seeds=[0])


def test_subject_scores_judge_the_garment_and_name_what_was_not_computed(samples, pairs, protocol):
    """On real renders of the garments (the ceiling a generator is compared with), the judge reads the
    garment's colour; CLIP-I is higher against the same garment's crop than against another garment's;
    DINO without weights is "not computed" with its reason, never a number."""
    import json

    import cv2

    from evaluation.subject import garment_accuracy, subject_scores
    from evaluation.truth_judge import TruthJudge
    from training.data import crop_box, fit

    judge = TruthJudge.load(ROOT / "models" / "truth-judge", protocol)
    by_key = {s.key: s for s in samples}
    tops = [r for r in pairs if r["part"] == "top"][:12]
    images = np.stack([fit(by_key[r["key"]].image, crop_box(by_key[r["key"]].image.shape[:2], (96, 64)), (96, 64),
                           cv2.INTER_AREA) for r in tops])
    own = [unpng(r["crop_png"]) for r in tops]
    garments = [json.loads(r["signature_json"]) for r in tops]
    scores = subject_scores(images, own, ["a person wearing " + r["entity_text"] for r in tops], garments, judge,
                            ROOT / "models" / "embedded-base-clip", colour_categories=["top_color"],
                            type_categories=["top_type"])
    assert scores["colour_accuracy"] >= 0.75 and scores["colour_by_category"]["top_color"]["count"] == len(tops)
    assert "dino" not in scores and "no local model directory" in scores["not_computed"]["dino"]
    shuffled = subject_scores(images, own[1:] + own[:1], ["x"] * len(tops), garments, judge,
                              ROOT / "models" / "embedded-base-clip")
    assert scores["clip_i"] > shuffled["clip_i"] and -1 <= scores["clip_t"] <= 1
    assert garment_accuracy([{"top_color": "red"}, {"top_color": "blue"}], [{"top_color": "red"}, {"top_color": "red"}],
                            ["top_color", "bag_color"]) == {"top_color": {"accuracy": 0.5, "count": 2}}
