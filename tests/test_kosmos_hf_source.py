"""A user's multimodal model as KOSMOS-G's source model: a local Hugging Face LLaVA-layout directory (tiny, random,
written offline) reads interleaved prompts, aligns to the embedded base, and is saved by reference, frozen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.tiny_mllm import write_tiny_llava
from tests.training_samples import synthetic_samples

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def llava_dir(tmp_path_factory):
    return write_tiny_llava(tmp_path_factory.mktemp("llava") / "tiny-llava")


def test_an_hf_model_embeds_interleaved_prompts_where_its_processor_puts_the_images(llava_dir):
    from training.kosmos.hf_source import HFSourceModel
    from training.kosmos.interleaved import parse

    source = HFSourceModel(llava_dir)
    red, blue = np.zeros((40, 30, 3), np.uint8), np.zeros((40, 30, 3), np.uint8)
    red[..., 0], blue[..., 2] = 220, 220
    prompts = [parse("a woman wearing <image> and <image>", [red, blue]), parse("a man in red")]
    hidden, pad = source.embed(prompts)
    assert hidden.shape == (2, 4 + 2 * 16, 32) and pad.dtype == torch.bool  # 16 tokens per image (4x4 patches)
    assert not pad[0].any() and pad[1].sum() == hidden.shape[1] - 4
    swapped, _ = source.embed([parse("a woman wearing <image> and <image>", [blue, red])])
    assert not torch.allclose(hidden[0, 3:], swapped[0, 3:]) and torch.allclose(hidden[0, :3], swapped[0, :3])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        HFSourceModel(llava_dir.parent)


def test_kosmos_g_on_an_hf_source_skips_its_pretraining_keeps_it_frozen_and_saves_it_by_reference(llava_dir, protocol,
                                                                                                  tmp_path):
    import json
    import shutil

    from flywheel.tracking import TrackingSettings
    from training.kosmos.checkpoint import load_kosmos
    from training.kosmos.generate import weights_digest
    from training.kosmos.hf_source import HFSourceModel
    from training.kosmos.instruct import examples_from_pairs
    from training.kosmos.interleaved import parse
    from training.kosmos.pairs import build_pairs
    from training.kosmos.run import run_kosmos_g
    from training.settings import KosmosSettings

    samples = synthetic_samples(protocol, seed=44, count=12)
    examples = examples_from_pairs(samples, build_pairs(samples, protocol), (96, 64))
    copy = tmp_path / "user-llava"
    shutil.copytree(llava_dir, copy)
    before = weights_digest(HFSourceModel(copy).model)
    s = KosmosSettings(source_dir=copy, captions=20, held_out_captions=4, align_steps=2, instruct_steps=2, batch_size=4,
                       instruct_batch_size=2, subject_prompts=0, max_source_len=256)
    tracking = TrackingSettings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "artifacts"))
    run = run_kosmos_g(s, ROOT / "models" / "embedded-base", ROOT / "models" / "embedded-base-clip", examples, [],
                       protocol, tmp_path / "out", tracking, "test-kosmos-hf")
    assert list(run.versions) == ["align", "instruct"]  # a user's model comes pretrained: no stage 1
    info = json.loads((run.model_dirs["instruct"] / "kosmos.json").read_text())
    assert info["source"]["kind"] == "hf" and info["source"]["path"] == str(copy)
    assert not (run.model_dirs["instruct"] / "source.safetensors").exists()
    loaded = load_kosmos(run.model_dirs["instruct"])
    assert isinstance(loaded.source, HFSourceModel) and weights_digest(loaded.source.model) == before
    cond = loaded.aligner.encode(*loaded.source.embed([parse("a man wearing <image>", [examples[0].image])]))
    assert cond.shape == (1, 77, 128)
    config = json.loads((copy / "config.json").read_text())
    config["text_config"]["rms_norm_eps"] = 1e-3
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="is not the one it was aligned to"):
        load_kosmos(run.model_dirs["instruct"])
