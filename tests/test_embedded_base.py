"""The committed embedded base: an SD 1.5 directory that loads, encodes, decodes and samples like one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.stages import EMBEDDED_BASE_DIR


def test_embedded_base_ships_checksums_that_cover_every_weight_file():
    from flywheel.checksums import CHECKSUMS, verify_checksums

    listed = {line.split("  ", 1)[1] for line in (EMBEDDED_BASE_DIR / CHECKSUMS).read_text().splitlines()}
    weights = {p.relative_to(EMBEDDED_BASE_DIR).as_posix() for p in EMBEDDED_BASE_DIR.rglob("*.safetensors")}
    assert weights and weights <= listed
    assert verify_checksums(EMBEDDED_BASE_DIR)
    total = sum(p.stat().st_size for p in EMBEDDED_BASE_DIR.rglob("*") if p.is_file())
    clip = sum(p.stat().st_size for p in EMBEDDED_BASE_DIR.with_name("embedded-base-clip").rglob("*") if p.is_file())
    assert total + clip <= 40e6  # the budget for committed weights


def test_embedded_base_loads_as_sd15_and_its_vae_reconstructs_a_render(protocol):
    import cv2

    from flywheel.synthetic.scene import render_people
    from training.base_model import load_base

    base = load_base(EMBEDDED_BASE_DIR)
    assert not base.is_sdxl and base.vae is not None and base.image_size == (96, 64) and base.latent_size == (24, 16)
    assert base.tokenizer.model_max_length == 77 and base.tokenizer.pad_token == "<|endoftext|>"
    image, *_ = render_people(np.random.default_rng([123, 4]), protocol, 128, 192)
    image = cv2.resize(image, (64, 96), interpolation=cv2.INTER_AREA)
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        z = base.vae.encode(x).latent_dist.mean * base.vae.config.scaling_factor
        back = base.vae.decode(z / base.vae.config.scaling_factor).sample
    assert z.shape == (1, 4, 24, 16) and 0.5 < float(z.std()) < 2.0  # the scaling factor gives ~unit latents
    error = float((back.clamp(-1, 1) - x).abs().mean() * 127.5)
    assert error < 20, f"VAE reconstruction error {error:.1f}/255"  # a random VAE is ~100


def test_diffusers_stable_diffusion_pipeline_runs_the_embedded_base():
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from training.base_model import load_base
    from training.sampling import generate

    pipe = StableDiffusionPipeline.from_pretrained(EMBEDDED_BASE_DIR, safety_checker=None, requires_safety_checker=False)
    base = load_base(EMBEDDED_BASE_DIR)
    # the directory's scheduler config as written: StableDiffusionPipeline rewrites a steps_offset of 0
    # to 1 when it loads (a deprecation fix-up), which shifts every DDIM timestep by one
    pipe.scheduler = DDIMScheduler.from_config(base.scheduler_config)
    pipe.set_progress_bar_config(disable=True)
    prompt = "full-body shot of a woman wearing a red t-shirt"
    latents = torch.randn(1, 4, 24, 16, generator=torch.Generator().manual_seed(7))
    out = pipe(prompt, height=96, width=64, num_inference_steps=4, guidance_scale=4.0, latents=latents,
               output_type="np").images
    assert out.shape == (1, 96, 64, 3)
    # the project's sampler is the same computation (same seed's noise, DDIM, guidance)
    ours = generate(base, base.unet, [prompt], [7], 96, 64, steps=4, guidance_scale=4.0)
    theirs = (out[0] * 255).round().astype(np.uint8)
    assert np.abs(ours[0].astype(int) - theirs.astype(int)).max() <= 1  # measured 0; 1 allows rounding at the edges


@pytest.mark.parametrize("name", ["vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"])
def test_a_corrupted_embedded_weight_file_is_named(tmp_path, name):
    import shutil

    from training.base_model import BaseModelError, load_base

    copy = tmp_path / "embedded-base"
    shutil.copytree(EMBEDDED_BASE_DIR, copy)
    path = copy / name
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BaseModelError, match=rf"{name}: sha256 mismatch"):
        load_base(copy)


def test_the_base_benchmark_prompts_name_what_they_are_scored_on():
    """Each prompt names the shot, the gender and the top colour it is judged against (a prompt
    without the colour word once made the colour figure measure nothing)."""
    import importlib.util

    from flywheel.settings import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location("base_model_bench", PROJECT_ROOT / "benchmarks" / "base_model.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    prompts = bench.prompt_set(2)
    assert len(prompts) == 2 * len(bench.SHOTS) * len(bench.GENDERS) * len(bench.COLOURS)
    for text, expected, _ in prompts:
        words = text.split()
        assert bench.SHOTS[expected["person_type"]] in text and expected["gender"] in words
        assert expected["top_color"] in words, text
