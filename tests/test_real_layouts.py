"""The embedded base, SD 1.5 and SDXL layouts through every path: sampling against diffusers'
own pipelines, the same conditioning in training and sampling, capture grids, aspect buckets,
plain / Daring / dual-prior training with reload, evaluation, weight variants.

The SD 1.5 and SDXL directories are tiny and random but written in the real layouts
(:mod:`tests.real_layouts`), once per test session."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.real_layouts import build_sd15, build_sdxl, diffusers_pipeline
from tests.training_samples import synthetic_samples
from training.base_model import load_base
from training.data import DaringDataset, DiscretizeSettings, collate, crop_box
from training.sampling import encode_batch, encode_prompts, generate, unconditional

EMBEDDED = Path(__file__).parents[1] / "models" / "embedded-base"
LAYOUTS = ("embedded", "sd15", "sdxl")
PROMPTS = ["a woman wearing a red t-shirt and blue pants", "a man, green t-shirt"]


@pytest.fixture(scope="session")
def layouts(tmp_path_factory, protocol) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("layouts")
    return {"embedded": EMBEDDED, "sd15": build_sd15(root / "sd15", protocol), "sdxl": build_sdxl(root / "sdxl", protocol),
            "sd15-fp16": build_sd15(root / "sd15-fp16", protocol, variant="fp16")}


@pytest.fixture(scope="module")
def portraits(protocol):
    return synthetic_samples(protocol, seed=5, count=6)  # 192x128 renders: portrait, aspect 1.5


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_generate_matches_the_diffusers_pipeline(layouts, layout):
    """Same latents, same DDIM steps, same guidance: identical pixels (SDXL with its real
    force_zeros_for_empty_prompt unconditional branch)."""
    base = load_base(layouts[layout])
    assert base.is_sdxl == (layout == "sdxl") and base.vae is not None
    h, w = (96, 64) if layout == "embedded" else (192, 128)  # SD layouts at a portrait bucket, not their square
    ours = generate(base, base.unet, PROMPTS, [1, 2], h, w, steps=3, guidance_scale=4.0)
    pipe = diffusers_pipeline(layouts[layout], layout == "sdxl")
    latents = torch.stack([torch.randn(4, h // base.vae_scale, w // base.vae_scale, generator=torch.Generator().manual_seed(s))
                           for s in (1, 2)])
    ref = pipe(PROMPTS, height=h, width=w, num_inference_steps=3, guidance_scale=4.0, latents=latents, output_type="np").images
    assert ours.shape == (2, h, w, 3)
    assert np.abs(ours.astype(int) - (ref * 255).round().astype(int)).max() <= 1
    if layout == "sdxl":
        context, added = unconditional(base, 1)
        assert base.force_zeros_for_empty_prompt and not context.any() and not added["text_embeds"].any()


@pytest.mark.parametrize("layout", ("sd15", "sdxl"))
def test_a_training_batch_is_conditioned_as_the_pipeline_encodes_its_caption(layouts, layout, portraits, protocol):
    base = load_base(layouts[layout])
    ds = DaringDataset(portraits[:2], protocol, base.tokenizer, DiscretizeSettings.for_evaluation(base, portraits), base.tokenizer_2)
    batch = collate([ds[0], ds[1]])
    context, added = encode_batch(base, batch)
    pipe = diffusers_pipeline(layouts[layout], layout == "sdxl")
    with torch.no_grad():
        out = pipe.encode_prompt(batch["caption"], device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    assert torch.allclose(context, out[0], atol=1e-6)
    assert torch.allclose(context, encode_prompts(base, batch["caption"], (192, 128))[0], atol=1e-6)
    if layout == "sdxl":
        assert "input_ids_2" in batch and not torch.equal(batch["input_ids_2"], batch["input_ids"])  # "!" padding
        assert torch.allclose(added["text_embeds"], out[2], atol=1e-6)
        assert added["time_ids"][0].tolist() == [192, 128, 0, 0, 192, 128]
        with pytest.raises(ValueError, match="input_ids_2"):
            encode_batch(base, {k: v for k, v in batch.items() if k != "input_ids_2"})


@pytest.mark.parametrize("layout", LAYOUTS)
def test_captured_grids_are_the_latent_grid_halved_per_level(layouts, layout, portraits, protocol):
    from training.alignment import attention_iou, captured_maps
    from training.attention import (
        AttentionStore,
        default_levels,
        install_capture,
        remove_capture,
    )

    base = load_base(layouts[layout])
    settings = DiscretizeSettings.for_evaluation(base, portraits)
    ds = DaringDataset(portraits, protocol, base.tokenizer, settings, base.tokenizer_2)
    store = AttentionStore()
    levels = default_levels(len(base.unet.config.block_out_channels))
    install_capture(base.unet, store, levels)
    maps = captured_maps(base, base.unet, collate([ds[0], ds[1]]), store)
    remove_capture(base.unet)
    lh, lw = settings.mask_height, settings.mask_width
    assert set(maps) == {(lh // 2 ** lv, lw // 2 ** lv) for lv in levels}
    assert all(m.shape[:2] == (2, 77) for m in maps.values())
    iou = attention_iou(base, base.unet, ds, levels)
    assert iou["groups"] > 0 and 0 <= iou["iou"] <= 1
    assert iou["iou_ci_low"] <= iou["iou"] <= iou["iou_ci_high"]


def test_portraits_train_at_a_portrait_bucket_of_a_square_base_and_are_cropped_not_squashed(layouts, portraits, protocol):
    base = load_base(layouts["sd15"])
    assert base.image_size == (128, 128)  # the square SD layout
    s = DiscretizeSettings.for_model(base, portraits)
    assert (s.height, s.width, s.mask_height, s.mask_width) == (192, 128, 24, 16)
    assert DiscretizeSettings.for_model(load_base(layouts["embedded"]), portraits).height == 96  # already 3:2
    # a square image into the portrait bucket: the centre columns, not the whole image squeezed
    square = portraits[0].__class__("sq", portraits[0].image[32:160], portraits[0].parsing[32:160], portraits[0].meta)
    y0, x0, h, w = crop_box(square.image.shape[:2], (192, 128))
    assert (y0, h, w) == (0, 128, 85) and x0 == 21
    item = DaringDataset([square], protocol, base.tokenizer, DiscretizeSettings.for_evaluation(base, portraits))[0]
    import cv2

    expected = cv2.resize(square.image[:, 21:106], (128, 192), interpolation=cv2.INTER_AREA)
    got = ((item["pixel_values"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(int)
    assert np.abs(got - expected.astype(int)).max() <= 1


def test_an_fp16_variant_directory_loads_in_float32(layouts):
    full, half = load_base(layouts["sd15"]), load_base(layouts["sd15-fp16"])
    assert not list((layouts["sd15-fp16"] / "unet").glob("diffusion_pytorch_model.safetensors"))
    assert all(p.dtype == torch.float32 for p in half.unet.parameters())
    for a, b in zip(full.unet.parameters(), half.unet.parameters()):
        assert torch.allclose(a, b, atol=2e-3, rtol=2e-3)  # the same seeded weights, rounded to fp16 and back


def _train(layout_dir, samples, protocol, out, **overrides):
    from training.settings import TrainSettings
    from training.trainer import train

    s = TrainSettings(**{"max_steps": 2, "batch_size": 2, "lr": 1e-4, "checkpoint_every": 2, "log_every": 1,
                         "attention_log_every": 100, **overrides})
    return train(s, layout_dir, samples, protocol, out)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", ["plain", "daring"])
def test_training_runs_and_its_pipeline_reloads_with_the_users_scheduler(layouts, layout, variant, portraits, protocol, tmp_path):
    result = _train(layouts[layout], portraits, protocol, tmp_path / "run", beta=0.0 if variant == "plain" else 1.0)
    assert result.steps == 2 and np.isfinite(result.losses.noise)
    if variant == "daring":
        assert result.captured_layers and result.losses.hola > 0
    original = json.loads((layouts[layout] / "scheduler" / "scheduler_config.json").read_text())
    written = json.loads((result.unet_dir / "scheduler" / "scheduler_config.json").read_text())
    assert written == original  # class and every field, not the DDPM view training used
    assert json.loads((result.unet_dir / "model_index.json").read_text())["scheduler"][1] == original["_class_name"]
    trained = load_base(result.unet_dir)
    assert trained.is_sdxl == (layout == "sdxl")
    assert trained.image_size == ((96, 64) if layout == "embedded" else (192, 128))  # the bucket it trained at
    images = generate(trained, trained.unet, PROMPTS[:1], [0], *trained.image_size, steps=2)
    assert images.shape == (1, *trained.image_size, 3)
    base = load_base(layouts[layout])
    changed = any(not torch.equal(a, b) for a, b in zip(base.unet.parameters(), trained.unet.parameters()))
    assert changed


@pytest.mark.parametrize("layout", LAYOUTS)
def test_dual_prior_both_stages_run_and_the_pose_token_learns_in_every_encoder(layouts, layout, portraits, protocol, tmp_path):
    from training.dual_prior.trainer import load_with_prior, train_stage
    from training.settings import DualPriorSettings

    s = DualPriorSettings(stage1_steps=2, stage2_steps=2, batch_size=2, checkpoint_every=100, log_every=1, image_log_every=100,
                          critic_steps=1, lora_rank=2)
    bind = train_stage("bind", s, layouts[layout], portraits, protocol, tmp_path)
    adv = train_stage("adversarial", s, layouts[layout], portraits, protocol, tmp_path, init_prior=bind.final_dir)
    assert bind.steps == adv.steps == 2 and np.isfinite(adv.last["loss_noise"]) and "gen_shape" in adv.last
    base, primed = load_base(layouts[layout]), load_with_prior(layouts[layout], adv.final_dir)
    for (tok, enc), (_, enc0) in zip(primed.text_pairs(), base.text_pairs()):
        tid = tok.convert_tokens_to_ids(s.pose_token)
        rows, rows0 = enc.get_input_embeddings().weight, enc0.get_input_embeddings().weight
        assert tid == rows0.shape[0]  # a new row
        assert torch.equal(rows[:tid], rows0)  # every other row restored (textual inversion)
    assert len(primed.text_pairs()) == (2 if layout == "sdxl" else 1)
    bucket = DiscretizeSettings.for_model(base, portraits)
    h, w = bucket.height, bucket.width
    assert generate(primed, primed.unet, [f"a woman, {s.pose_token}"], [0], h, w, steps=2).shape == (1, h, w, 3)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_evaluation_runs_on_each_layout(layouts, layout, portraits, protocol):
    from evaluation.models import base_model
    from evaluation.prompts import EvalPrompt
    from evaluation.run import EvalContext, evaluate_model
    from evaluation.settings import EvaluationSettings

    settings = EvaluationSettings(steps=2, seeds=[0], quality_metrics=[], attention_samples=2, bootstrap=100)
    prompts = [EvalPrompt("p0", PROMPTS[0], {}), EvalPrompt("p1", PROMPTS[1], {})]
    result = evaluate_model(base_model(layouts[layout]), EvalContext(settings, protocol, None, prompts, portraits[:2]))
    h, w = (96, 64) if layout == "embedded" else (192, 128)  # the held-out aspect, for a square base too
    assert result.images.shape == (2, h, w, 3)
    assert 0 <= result.metrics["attention_iou"] <= 1 and result.has_vae


def test_the_benchmarks_full_layouts_have_the_published_parameter_counts():
    """training/unet_layouts.py's SD 1.5 and SDXL configs build UNets of exactly the released
    models' sizes (859,520,964 and 2,567,463,684 parameters), on the meta device."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from training.unet_layouts import SD15, SDXL, conditioning

    for config, count in ((SD15, 859_520_964), (SDXL, 2_567_463_684)):
        with init_empty_weights():
            unet = UNet2DConditionModel(**config)
        assert sum(p.numel() for p in unet.parameters()) == count
    assert conditioning(SDXL) == {"context_dim": 2048, "pooled_dim": 1280, "time_ids": 6}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_pyfunc_model_honours_its_steps_parameter(layouts, layout, tmp_path):
    """The registered model's pyfunc (from code, with its signature): ``params={"steps": n}`` runs
    n guided UNet calls per batch, not the default 25."""
    import mlflow
    import pandas as pd

    from training.mlflow_model import PIPELINE, pip_requirements, signature

    path = tmp_path / "model"
    mlflow.pyfunc.save_model(str(path), python_model=str(PIPELINE), artifacts={"pipeline": str(layouts[layout])},
                             signature=signature(), pip_requirements=pip_requirements())  # pinned: no inference subprocess
    model = mlflow.pyfunc.load_model(str(path))
    calls = []
    model.unwrap_python_model().base.unet.register_forward_hook(lambda *_: calls.append(1))
    frame = pd.DataFrame({"prompt": PROMPTS, "seed": [0, 1]})
    for steps in (2, 3):
        calls.clear()
        out = model.predict(frame, params={"steps": steps})
        assert len(calls) == steps and len(out) == 2
        assert all(png[:8] == b"\x89PNG\r\n\x1a\n" for png in out)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_lora_training_saves_an_adapter_for_each_layout_that_reloads_onto_its_base(layouts, layout, portraits, protocol, tmp_path):
    from training.lora import is_adapter, load_trained

    result = _train(layouts[layout], portraits, protocol, tmp_path / "run", beta=1.0, lora_rank=2, lr=1e-2)
    assert is_adapter(result.unet_dir) and not (result.unet_dir / "unet").exists()  # the adapter, not a merged UNet
    trained, base = load_trained(result.unet_dir), load_base(layouts[layout])
    assert trained.is_sdxl == base.is_sdxl and trained.image_size == ((96, 64) if layout == "embedded" else (192, 128))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, *trained.latent_size, generator=g)
    context, added = encode_prompts(trained, PROMPTS[:1], trained.image_size)
    extra = {"added_cond_kwargs": added} if added else {}
    with torch.no_grad():
        a = trained.unet(x, torch.tensor([500]), encoder_hidden_states=context, **extra).sample
        b = base.unet(x, torch.tensor([500]), encoder_hidden_states=context, **extra).sample
    assert not torch.allclose(a, b, atol=1e-6)  # the adapter is applied
    assert generate(trained, trained.unet, PROMPTS[:1], [0], *trained.image_size, steps=2).shape == (1, *trained.image_size, 3)
