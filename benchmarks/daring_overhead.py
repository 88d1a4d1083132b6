"""Daring's overhead: step time and peak memory of a plain denoising fine-tune step vs a
Daring step (capture on the chosen cross-attention layers + HOLA), same model, batch and
resolution, each mode measured in its own process so peak memory is its own.

    .venv/bin/python benchmarks/daring_overhead.py                       # tiny pixel model, CPU
    .venv/bin/python benchmarks/daring_overhead.py --model sd15 --resolution 512 --precision bf16 --batch 8
    .venv/bin/python benchmarks/daring_overhead.py --model sdxl --resolution 1024 --precision bf16 --batch 2

``--model sd15|sdxl`` builds the published UNet layout (random weights: the overhead depends on
shapes, not values) on a GPU when one is present (``--device auto``). Without one they run the
tiny layouts of the same pattern (training/unet_layouts.py) and say so in the first line. SDXL
steps get its added inputs (pooled text embedding, size ids) and its 2048-wide context.

Goals (issue): time ratio <= 1.10, memory ratio <= 1.15.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time

TINY_PIXEL = dict(sample_size=(96, 64), in_channels=3, out_channels=3,
                  down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                  up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
                  block_out_channels=(32, 64, 96, 128), layers_per_block=1, cross_attention_dim=64,
                  attention_head_dim=2, norm_num_groups=16)


def layout(model: str, device: str) -> tuple[str, dict]:
    """(name, UNet config): the published layout on a GPU, its tiny stand-in on CPU."""
    from training.unet_layouts import LAYOUTS

    if model == "tiny":
        return "tiny pixel-space UNet", TINY_PIXEL
    if device.startswith("cuda"):
        return f"{model} (published layout)", LAYOUTS[model]
    return f"tiny-{model} (no GPU: the tiny layout of {model}'s pattern)", LAYOUTS[f"tiny-{model}"]


def _measure(mode: str, args: dict, out) -> None:
    import torch

    from training.attention import AttentionStore, install_capture
    from training.hola import hola_loss

    torch.manual_seed(0)
    device = torch.device(args["device"])
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    from diffusers import UNet2DConditionModel

    from training.unet_layouts import conditioning

    _, config = layout(args["model"], args["device"])
    unet = UNet2DConditionModel(**config)
    if args["model"] == "tiny":
        h, w = config["sample_size"]
    else:  # latents of the requested resolution (VAE scale 8)
        h = w = args["resolution"] // 8
    cond = conditioning(config)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args["precision"], torch.float32)
    unet.to(device)
    if args["checkpointing"]:
        unet.enable_gradient_checkpointing()
    from diffusers.models.attention_processor import AttnProcessor2_0

    unet.set_attn_processor(AttnProcessor2_0())
    store = AttentionStore(latent_size=(h, w))
    layers = install_capture(unet, store) if mode == "daring" else []
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    b = args["batch"]
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, unet.config.in_channels, h, w, generator=g).to(device)
    ctx = torch.randn(b, 77, cond["context_dim"], generator=g).to(device)
    added = {"added_cond_kwargs": {"text_embeds": torch.randn(b, cond["pooled_dim"], generator=g).to(device),
                                   "time_ids": torch.tensor([[h * 8, w * 8, 0, 0, h * 8, w * 8]] * b, dtype=torch.float32).to(device)}} \
        if "pooled_dim" in cond else {}
    masks = (torch.rand(b, 8, h, w, generator=g) > 0.5).float().to(device)
    token_group = torch.randint(-1, 8, (b, 77), generator=g).to(device)
    valid = torch.ones(b, 8, dtype=torch.bool, device=device)

    def step():
        t = torch.randint(0, 1000, (b,), device=device)
        noise = torch.randn_like(x)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            store.recording = mode == "daring"
            pred = unet(x + noise, t, encoder_hidden_states=ctx, **added).sample
            store.recording = False
            loss = torch.nn.functional.mse_loss(pred.float(), noise.float())
            if mode == "daring":
                loss = loss + 0.1 * hola_loss(store.by_resolution(), masks, token_group, valid)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        store.clear()

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args["warmup"]):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args["steps"]):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out.put({"mode": mode, "median_s": times[len(times) // 2], "peak_bytes": peak, "layers": len(layers)})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["tiny", "sd15", "sdxl"], default="tiny")
    ap.add_argument("--resolution", type=int, default=None,
                    help="pixels (square); default 512 for sd15 and 1024 for sdxl on a GPU, 256 for their tiny CPU layouts")
    ap.add_argument("--device", default="auto", help="auto: cuda when present, else cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = vars(ap.parse_args())
    if args["device"] == "auto":
        import torch

        args["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = args["device"].startswith("cuda")
    args["resolution"] = args["resolution"] or ({"sd15": 512, "sdxl": 1024}.get(args["model"], 0) if gpu else 256)
    name, _ = layout(args["model"], args["device"])
    size = "96x64 px" if args["model"] == "tiny" else f"{args['resolution']} px"
    print(f"model {name}, {size}")
    ctx = mp.get_context("spawn")
    results = {}
    for mode in ("plain", "daring"):
        q = ctx.Queue()
        p = ctx.Process(target=_measure, args=(mode, args, q))
        p.start()
        results[mode] = q.get()
        p.join()
    plain, daring = results["plain"], results["daring"]
    kind = "GPU peak allocated" if args["device"].startswith("cuda") else "process peak RSS"
    print(f"model {name}, batch {args['batch']}, device {args['device']}, precision {args['precision']}, "
          f"gradient checkpointing {args['checkpointing']}; Daring captures {daring['layers']} cross-attention layers")
    for r in (plain, daring):
        print(f"  {r['mode']:6s}: {r['median_s'] * 1000:8.1f} ms/step, {kind} {r['peak_bytes'] / 2**20:8.0f} MiB")
    tr, mr = daring["median_s"] / plain["median_s"], daring["peak_bytes"] / plain["peak_bytes"]
    print(f"time ratio {tr:.3f} (goal <= 1.10); memory ratio {mr:.3f} (goal <= 1.15)")
    print(json.dumps({"time_ratio": tr, "memory_ratio": mr}))
    return 0 if tr <= 1.10 and mr <= 1.15 else 1


if __name__ == "__main__":
    sys.exit(main())
