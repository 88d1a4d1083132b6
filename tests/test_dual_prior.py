"""Dual-level prior: binding losses, critics and WGAN-GP, the pose token, both stages end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.dual_prior.binding import bind_loss, margin_loss, scale_loss, skeleton_mask, suppression_loss
from training.dual_prior.critic import PatchCritic, critic_loss, generator_loss, gradient_penalty


def test_binding_losses_on_hand_computed_maps():
    mask = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    m = torch.tensor([[[0.9, 0.6], [0.2, 0.4]]])
    assert suppression_loss(m, mask).item() == pytest.approx((0.2 + 0.4) / 4)
    # inside minimum 0.6, outside maximum 0.4: inside exceeds outside by 0.2
    assert margin_loss(m, mask, delta=0.1).item() == pytest.approx(0.0)
    assert margin_loss(m, mask, delta=0.5).item() == pytest.approx(0.4 - 0.6 + 0.5)
    assert scale_loss(m, mask).item() == pytest.approx((0.01 + 0.16 + 0.04 + 0.16) / 4)
    out = bind_loss(torch.cat([m, m]), torch.cat([mask, mask]), torch.tensor([True, False]), delta=0.5)
    assert out["total"].item() == pytest.approx(0.15 + 0.3 + 0.0925)
    # a map equal to its mask costs nothing
    assert bind_loss(mask, mask, torch.tensor([True]), delta=0.5)["total"].item() == pytest.approx(0.0)


def test_skeleton_mask_draws_limbs_between_visible_joints():
    kp = np.zeros((17, 3), np.float32)
    kp[5] = [10, 10, 2]  # left shoulder
    kp[7] = [10, 30, 2]  # left elbow
    kp[9] = [10, 50, 0]  # left wrist, not visible
    mask = skeleton_mask(kp.reshape(-1), 64, 32, (64, 32), thickness=1)
    assert mask[20, 10] == 1 and mask[40, 10] == 0 and mask.sum() == pytest.approx(21, abs=1)


def test_gradient_penalty_of_a_unit_norm_linear_critic_is_zero():
    torch.manual_seed(0)
    w = torch.randn(6 * 4)
    w = w / w.norm()
    critic = lambda x: x.flatten(1) @ w  # noqa: E731 - a linear critic with unit-norm weight
    real, fake = torch.rand(5, 6, 4), torch.rand(5, 6, 4)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    assert gradient_penalty(lambda x: 2 * critic(x), real, fake).item() == pytest.approx(1.0, abs=1e-6)


def test_critic_loss_flips_roles_and_generator_loss_freezes_the_critic():
    critic = PatchCritic(layers=11, width=8, dropout=0.0)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in critic.modules()) == 11
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in critic.modules())
    real, fake = torch.rand(4, 16, 16), torch.rand(4, 16, 16, requires_grad=True)
    plain = critic_loss(critic, real, fake, gp_weight=0.0)
    flipped = critic_loss(critic, real, fake, gp_weight=0.0, flip_prob=1.0)
    assert plain["loss"].item() == pytest.approx(-flipped["loss"].item(), rel=1e-5)
    assert plain["loss"].item() == pytest.approx(-plain["wasserstein"].item(), rel=1e-5)
    plain["loss"].backward()
    assert fake.grad is None  # fakes are detached in the critic step
    g = generator_loss(critic, fake)
    g.backward()
    assert fake.grad is not None and all(p.grad is None or p.requires_grad for p in critic.parameters())
    assert all(p.requires_grad for p in critic.parameters())  # unfrozen again afterwards


@pytest.fixture(scope="module")
def dual_samples(protocol):
    from tests.training_samples import synthetic_samples

    return synthetic_samples(protocol, seed=4, count=8)


@pytest.mark.slow
def test_both_stages_train_only_the_pose_row_resume_and_generate_with_the_token(tmp_path, protocol, dual_samples):
    from training.base_model import create_tiny_base, load_base
    from training.dual_prior.trainer import load_with_prior, train_stage
    from training.sampling import generate
    from training.settings import DualPriorSettings

    torch.set_num_threads(2)
    base_dir = create_tiny_base(tmp_path / "base", protocol)
    before = load_base(base_dir).text_encoder.get_input_embeddings().weight.detach().clone()
    s = DualPriorSettings(stage1_steps=2, stage2_steps=2, batch_size=4, lr=1e-3, lora_rank=4, critic_layers=5,
                          critic_width=8, checkpoint_every=1, checkpoints_total_limit=1, log_every=1)
    logs = []
    bind = train_stage("bind", s, base_dir, dual_samples, protocol, tmp_path / "out", on_log=lambda st, k, m: logs.append((st, k, m)))
    assert bind.steps == 2 and {"shape_suppress", "shape_margin", "shape_scale", "pose_total"} <= set(logs[-1][2])
    trained = load_with_prior(base_dir, bind.final_dir)
    after = trained.text_encoder.get_input_embeddings().weight.detach()
    tid = trained.tokenizer.convert_tokens_to_ids("<sds>")
    assert after.shape[0] == before.shape[0] + 1
    assert torch.equal(after[:-1], before)  # every original row is unchanged
    person = trained.tokenizer("person", add_special_tokens=False).input_ids[0]
    assert not torch.equal(after[tid], before[person])  # the pose token's row learned

    adv = train_stage("adversarial", s, base_dir, dual_samples, protocol, tmp_path / "out", init_prior=bind.final_dir,
                      on_log=lambda st, k, m: logs.append((st, k, m)))
    assert adv.steps == 2 and "critic_pose_gp" in logs[-1][2] and "critic_shape_wasserstein" in logs[-1][2]
    ckpt = sorted((tmp_path / "out" / "adversarial").glob("checkpoint-*"))[-1]
    assert len(list(ckpt.glob("optimizer*"))) == 2 and len(list(ckpt.glob("model*"))) >= 3  # critics saved too
    resumed = train_stage("adversarial", s.model_copy(update={"stage2_steps": 3}), base_dir, dual_samples, protocol,
                          tmp_path / "out", init_prior=bind.final_dir)
    assert resumed.resumed_from == 2 and resumed.steps == 3
    final = load_with_prior(base_dir, resumed.final_dir)
    images = generate(final, final.unet, ["a woman, <sds>"], [0], 96, 64, steps=2)
    assert images.shape == (1, 96, 64, 3)


def test_binding_is_computed_per_map_and_averaged_over_maps():
    """Three supervised tokens at two resolutions: each map normalised on its own, the loss the
    mean of the per-map losses (the paper's sums over the map set), not the loss of one averaged map."""
    from training.dual_prior.binding import supervised_maps, token_maps

    g = torch.Generator().manual_seed(3)
    maps = {(8, 4): torch.rand(2, 6, 8, 4, generator=g), (4, 2): torch.rand(2, 6, 4, 2, generator=g)}
    maps[(8, 4)][0, 1, :4] *= 8  # one token strongly inside the mask, another leaking outside it
    maps[(8, 4)][0, 4, 4:] *= 3
    tokens = torch.zeros(2, 6, dtype=torch.bool)
    tokens[0, [1, 2, 4]] = True
    tokens[1, 2] = True
    mask = torch.zeros(2, 8, 4)
    mask[:, :4] = 1
    per_map, selected = supervised_maps(maps, tokens, (8, 4))
    got = bind_loss(per_map, mask, tokens.any(1), 0.1, selected)
    expected = {"suppress": [], "margin": [], "scale": []}
    for b in range(2):
        per_sample = {k: [] for k in expected}
        for m in maps.values():
            for t in tokens[b].nonzero()[:, 0]:
                up = torch.nn.functional.interpolate(m[b, t][None, None], size=(8, 4), mode="bilinear", align_corners=False)[0, 0]
                up = up / (up.max() + 1e-6)
                per_sample["suppress"].append(suppression_loss(up[None], mask[b][None]))
                per_sample["margin"].append(margin_loss(up[None], mask[b][None], 0.1))
                per_sample["scale"].append(scale_loss(up[None], mask[b][None]))
        for k in expected:
            expected[k].append(torch.cat(per_sample[k]).mean())
    for k in expected:
        assert got[k].item() == pytest.approx(torch.stack(expected[k]).mean().item(), rel=1e-5)
    # one token exactly on the mask, one exactly off it: per map, suppression is 0 and 0.5 (mean 0.25);
    # their average is flat, normalised to 1 everywhere, and suppresses 0.5
    on_off = {(8, 4): torch.stack([mask[0], 1 - mask[0]])[None]}
    both = torch.tensor([[True, True]])
    per_map, selected = supervised_maps(on_off, both, (8, 4))
    assert bind_loss(per_map, mask[:1], both.any(1), 0.1, selected)["suppress"].item() == pytest.approx(0.25, abs=1e-5)
    assert bind_loss(token_maps(on_off, both, (8, 4)), mask[:1], both.any(1), 0.1)["suppress"].item() == pytest.approx(0.5, abs=1e-5)
