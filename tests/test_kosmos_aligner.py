"""KOSMOS-G's AlignerNet: shapes for both presets and mismatched lengths, clear errors, and
learning a toy alignment."""

from __future__ import annotations

import pytest
import torch

from training.kosmos.aligner import AlignerConfig, AlignerNet, r_squared


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_both_presets_map_any_source_length_to_the_target_length_and_back(preset):
    # the paper preset (12 layers, width 768) is built on the meta device: shapes without 1.3 GB of weights
    device = torch.device("meta" if preset == "paper" else "cpu")
    with device:
        net = AlignerNet(AlignerConfig.preset(preset, source_dim=96, target_dim=128 if preset == "tiny" else 768))
        for length in (5, 40):
            source = torch.randn(2, length, 96)
            target = torch.randn(2, 77, net.config.target_dim)
            out = net(source, target)
            assert out["aligned"].shape == (2, 77, net.config.target_dim)
            assert net.decode(out["aligned"], length).shape == (2, length, 96)
    assert (net.config.layers, net.config.width) == ((12, 768) if preset == "paper" else (2, 128))


def test_padding_does_not_change_what_a_sequence_aligns_to():
    torch.manual_seed(0)
    net = AlignerNet(AlignerConfig(source_dim=8, target_dim=8, target_len=6, max_source_len=16, layers=1, width=16, heads=2)).eval()
    short = torch.randn(1, 4, 8)
    padded = torch.cat([short, torch.randn(1, 3, 8)], 1)  # garbage at the padded positions
    mask = torch.tensor([[False] * 4 + [True] * 3])
    with torch.no_grad():
        assert torch.allclose(net.encode(short), net.encode(padded, mask), atol=1e-5)


def test_bad_shapes_are_named():
    net = AlignerNet(AlignerConfig(source_dim=8, target_dim=8, target_len=6, max_source_len=16, layers=1, width=16, heads=2))
    with pytest.raises(ValueError, match=r"source embeddings of shape \(batch, length, 8\) expected, got \(1, 4, 5\)"):
        net.encode(torch.randn(1, 4, 5))
    with pytest.raises(ValueError, match="length 17; 1 to max_source_len 16"):
        net.encode(torch.randn(1, 17, 8))
    with pytest.raises(ValueError, match=r"target of shape \(batch, 6, 8\) expected"):
        net(torch.randn(1, 4, 8), torch.randn(1, 77, 8))
    with pytest.raises(ValueError, match="unknown|expected one of"):
        AlignerConfig.preset("huge", 8, 8)


def test_the_loss_learns_a_toy_alignment_to_r2_095():
    """Targets: per target position j, a fixed linear map of the mean of the valid source
    positions (variable source lengths, padded): learnable only by attending over the source."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    ds, dt, lt = 16, 16, 8
    maps = torch.randn(lt, dt, ds) / ds ** 0.5

    def batch(n, g):
        lengths = torch.randint(4, 13, (n,), generator=g)
        pad = torch.arange(12)[None] >= lengths[:, None]
        source = torch.randn(n, 12, ds, generator=g).masked_fill(pad[..., None], 0.0)
        return source, pad, torch.einsum("jdk,bk->bjd", maps, source.sum(1) / lengths[:, None])

    net = AlignerNet(AlignerConfig(ds, dt, target_len=lt, max_source_len=32, layers=1, width=64, heads=4))
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    held_out = batch(256, torch.Generator().manual_seed(99))
    first, r2 = None, float("-inf")
    for step in range(1, 1201):
        source, pad, target = batch(64, g)
        out = net(source, target, pad)
        first = first if first is not None else out["mse"].item()
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        if step % 50 == 0:
            with torch.no_grad():
                r2 = r_squared(net.encode(held_out[0], held_out[1]), held_out[2])
            if r2 >= 0.95:
                break
    assert r2 >= 0.95, f"held-out R^2 {r2:.3f} after {step} steps"
    assert out["mse"].item() < 0.2 * first
