"""Daring: attention capture, HOLA, data discretization and the trainer on the tiny base model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.training_samples import synthetic_samples
from training.attention import AttentionStore, CapturingAttnProcessor, install_capture
from training.base_model import create_tiny_base, load_base
from training.data import DaringDataset, DiscretizeSettings
from training.hola import hola_loss


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, protocol):
    path = tmp_path_factory.mktemp("tiny") / "base"
    create_tiny_base(path, protocol)
    return path


@pytest.fixture(scope="module")
def samples(protocol):
    return synthetic_samples(protocol, seed=3, count=12)


def _inputs(base, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = base.unet.config.sample_size
    x = torch.randn(batch, 3, h, w, generator=g)
    ctx = base.text_encoder(base.tokenizer(["a woman, red t-shirt"] * batch, padding="max_length", max_length=77,
                                           return_tensors="pt").input_ids)[0]
    return x, torch.tensor([500] * batch), ctx.detach()


def test_capturing_processor_matches_the_fused_one(tiny):
    base = load_base(tiny)
    x, t, ctx = _inputs(base)
    with torch.no_grad():
        reference = base.unet(x, t, encoder_hidden_states=ctx).sample
        store = AttentionStore(recording=True, latent_size=tuple(x.shape[-2:]))
        chosen = install_capture(base.unet, store)
        captured = base.unet(x, t, encoder_hidden_states=ctx).sample
    assert torch.allclose(reference, captured, atol=1e-5)
    assert len(store.maps) == len(chosen) and all(".attn2." in n for n in chosen)
    procs = base.unet.attn_processors
    assert sum(isinstance(p, CapturingAttnProcessor) for p in procs.values()) == len(chosen)
    assert all(not isinstance(p, CapturingAttnProcessor) for n, p in procs.items() if ".attn1." in n)  # self-attn stays fused
    probs = store.maps[0].probs
    assert torch.allclose(probs.sum(-1), torch.ones_like(probs.sum(-1)), atol=1e-5)
    assert (store.maps[0].height, store.maps[0].width) == (24, 16)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_hola_gradient_reaches_the_captured_query_and_key(tiny, checkpointing):
    base = load_base(tiny)
    unet = base.unet
    if checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    x, t, ctx = _inputs(base)
    store = AttentionStore(latent_size=tuple(x.shape[-2:]))
    chosen = install_capture(unet, store)
    store.recording = True
    unet(x, t, encoder_hidden_states=ctx)
    store.recording = False
    assert len(store.maps) == len(chosen)
    masks = torch.zeros(2, 2, 96, 64)
    masks[:, 0, 20:80, 16:48] = 1
    token_group = torch.full((2, 77), -1)
    token_group[:, 1:3] = 0
    loss = hola_loss(store.by_resolution(), masks, token_group, torch.tensor([[True, False]] * 2))
    loss.backward()
    assert len(store.maps) == len(chosen)  # the recompute during backward stored nothing
    modules = dict(unet.named_modules())
    for name in chosen:
        attn = modules[name.removesuffix(".processor")]
        assert attn.to_q.weight.grad is not None and attn.to_q.weight.grad.abs().sum() > 0
        assert attn.to_k.weight.grad is not None and attn.to_k.weight.grad.abs().sum() > 0
    # the maps depend on Q and K only: the last captured layer's V and output projections get nothing
    last = modules[store.maps[-1].layer.removesuffix(".processor")]
    assert last.to_v.weight.grad is None and last.to_out[0].weight.grad is None


def test_hola_is_zero_when_maps_equal_masks_and_grows_by_the_hand_computed_amount():
    h, w, t = 4, 4, 6
    masks = torch.zeros(1, 3, h, w)
    masks[0, 0, :, :2] = 1  # body group: left half
    masks[0, 1, :2, :2] = 1  # a garment: top-left quarter
    token_group = torch.tensor([[-1, 0, 0, 1, 1, 1]])  # start token, two body tokens, three garment tokens
    valid = torch.tensor([[True, True, False]])
    maps = torch.zeros(1, t, h, w)
    for j in range(t):
        if token_group[0, j] >= 0:
            maps[0, j] = masks[0, token_group[0, j]]
    maps[0, 0] = 1.0  # the start token's map never matters
    assert hola_loss({(h, w): maps}, masks, token_group, valid).item() == pytest.approx(0.0, abs=1e-9)
    delta = 0.5
    perturbed = maps.clone()
    perturbed[0, 4, 0, 0] -= delta  # one garment token, one pixel inside its mask (its max stays 1)
    # term 1: δ²/(h·w) for that token; term 2: the group mean moves by δ/3 on that pixel;
    # both averaged over the 2 valid groups
    expected = (delta ** 2 / (h * w) + (delta / 3) ** 2 / (h * w)) / 2
    assert hola_loss({(h, w): perturbed}, masks, token_group, valid).item() == pytest.approx(expected, rel=1e-4)
    # a dropped caption (no tokens in any group) and an empty batch give 0, not NaN
    assert hola_loss({(h, w): maps}, masks, torch.full_like(token_group, -1), valid).item() == 0.0
    assert hola_loss({}, masks, token_group, valid).item() == 0.0


def test_discretization_ties_tokens_to_their_groups_by_offsets(tiny, samples, protocol):
    base = load_base(tiny)
    s = DiscretizeSettings(group_dropout=0.0, caption_dropout=0.0, flip=False)
    ds = DaringDataset(samples, protocol, base.tokenizer, s)
    item = ds[0]
    groups = samples[0].meta["caption_groups"]
    assert item["caption"].startswith(groups[0]["text"])  # the body group leads
    tokens = base.tokenizer.convert_ids_to_tokens(item["input_ids"].tolist())
    body_tokens = [tok for tok, g in zip(tokens, item["token_group"].tolist()) if g == 0]
    assert body_tokens == base.tokenizer.tokenize(groups[0]["text"])
    assert item["token_group"][0] == -1  # start of text is in no group
    assert item["group_valid"][0] and item["masks"][0].sum() > 0
    human = np.isin(samples[0].parsing, protocol.human_class_ids).mean()
    assert abs(item["masks"][0].mean().item() - human) < 0.05  # h_1 is the whole person
    scene = [g for g in groups if not g["class_ids"]]
    if scene:
        start = item["caption"].index(scene[0]["text"])
        enc = base.tokenizer(item["caption"], return_offsets_mapping=True)
        assert all(g == -1 for (a, _), g in zip(enc["offset_mapping"], item["token_group"].tolist()) if a >= start
                   and a < start + len(scene[0]["text"]))
    dropped = DaringDataset(samples, protocol, base.tokenizer, DiscretizeSettings(caption_dropout=1.0))[0]
    assert dropped["caption"] == "" and (dropped["token_group"] == -1).all()


def test_flip_moves_image_and_masks_together_and_swaps_sides(protocol):
    from training.data import flip_table

    table = flip_table(protocol)
    names = list(protocol.parsing_classes)
    left = names.index("left-shoe")
    assert names[table[left]] == "right-shoe" and table[table[left]] == left
    assert table[names.index("hat")] == names.index("hat")


@pytest.mark.slow
def test_trainer_checkpoints_resumes_and_saves_a_loadable_model(tiny, samples, protocol, tmp_path):
    from training.trainer import TrainSettings, train

    torch.set_num_threads(2)
    settings = TrainSettings(beta=1.0, max_steps=2, batch_size=4, lr=1e-3, checkpoint_every=1, checkpoints_total_limit=1,
                             log_every=1, act_fn="gelu", use_ema=True, snr_gamma=5.0, noise_offset=0.05)
    first = train(settings, tiny, samples, protocol, tmp_path / "run")
    assert first.steps == 2 and first.losses.hola > 0 and first.captured_layers
    assert [p.name for p in sorted((tmp_path / "run").glob("checkpoint-*"))] == ["checkpoint-2"]  # limit 1
    more = train(settings.model_copy(update={"max_steps": 3}), tiny, samples, protocol, tmp_path / "run")
    assert more.resumed_from == 2 and more.steps == 3
    trained = load_base(more.unet_dir)
    assert trained.unet.config.act_fn == "gelu"
    from training.sampling import generate

    images = generate(trained, trained.unet, ["a woman, red t-shirt"], [0], 96, 64, steps=2)
    assert images.shape == (1, 96, 64, 3) and images.dtype == np.uint8

    lora = train(TrainSettings(beta=1.0, max_steps=1, batch_size=4, lora_rank=4, lr=1e-3), tiny, samples, protocol,
                 tmp_path / "lora")
    from training.lora import load_trained

    # the adapter is saved, not folded into a full UNet (train.lora_merge asks for that)
    assert lora.adapter_dir == lora.unet_dir and any("lora" in k for k in load_trained(lora.unet_dir).unet.state_dict())


def test_topk_iou_scores_the_most_attended_region_not_a_flat_map():
    from training.alignment import topk_iou

    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    exact = np.where(mask, 0.9, 0.1)
    assert topk_iou(exact, mask) == 1.0
    shifted = np.roll(exact, 1, axis=1)  # half of the attended pixels inside: IoU 2/6
    assert topk_iou(shifted, mask) == pytest.approx(2 / 6)
    assert topk_iou(np.ones((4, 4)), mask) < 1.0  # a flat map is no longer a perfect (whole-image) answer


def test_text_encoder_fine_tunes_with_the_unet_resumes_and_is_saved(tiny, samples, protocol, tmp_path):
    from training.trainer import TrainSettings, train

    torch.set_num_threads(2)
    before = load_base(tiny).text_encoder.state_dict()
    settings = TrainSettings(beta=1.0, max_steps=1, batch_size=4, lr=1e-3, checkpoint_every=1, train_text_encoder=True)
    first = train(settings, tiny, samples, protocol, tmp_path / "te")
    after = load_base(first.unet_dir).text_encoder.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any("token_embedding" in k for k in changed) and any("layers.0.self_attn" in k for k in changed)
    more = train(settings.model_copy(update={"max_steps": 2}), tiny, samples, protocol, tmp_path / "te")
    assert more.resumed_from == 1 and more.steps == 2
    resumed = load_base(more.unet_dir).text_encoder.state_dict()
    assert any(not torch.equal(after[k], resumed[k]) for k in after)  # the resumed step trained it further
    with pytest.raises(ValueError, match="full fine-tuning only"):
        train(settings.model_copy(update={"lora_rank": 4}), tiny, samples, protocol, tmp_path / "bad")
    key = next(k for k in before if "token_embedding" in k)
    assert torch.equal(load_base(tiny).text_encoder.state_dict()[key], before[key])  # the base model is untouched


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_denoising_target_is_what_the_scheduler_converts_back_to_the_clean_sample(kind):
    from diffusers import DDIMScheduler, DDPMScheduler

    from training.denoising import denoising_target, min_snr_weights, snr

    train = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type=kind, clip_sample=False)
    g = torch.Generator().manual_seed(0)
    x, noise = torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor([10, 500, 990])
    target = denoising_target(train, x, noise, t)
    # a perfect prediction of the target lets the sampler recover x exactly
    sampler = DDIMScheduler.from_config(train.config)
    sampler.set_timesteps(1000)
    for i in range(3):
        x0 = sampler.step(target[i:i + 1], int(t[i]), train.add_noise(x, noise, t)[i:i + 1]).pred_original_sample
        assert torch.allclose(x0, x[i:i + 1], atol=1e-3)
    # Min-SNR-5 caps the x0-error weight at 5 whatever the target is
    s = snr(train, t)
    x0_weight = {"epsilon": s, "v_prediction": s + 1, "sample": torch.ones_like(s)}[kind]
    assert torch.allclose(min_snr_weights(train, t, 5.0) * x0_weight, torch.minimum(s, torch.full_like(s, 5.0)), rtol=1e-5)


def test_an_unknown_prediction_type_is_refused_by_name():
    from types import SimpleNamespace

    from training.denoising import denoising_target

    scheduler = SimpleNamespace(config=SimpleNamespace(prediction_type="flow"))
    with pytest.raises(ValueError, match="'flow'"):
        denoising_target(scheduler, torch.zeros(1), torch.zeros(1), torch.zeros(1, dtype=torch.long))
