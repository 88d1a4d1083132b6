"""UNet configs of the real backbones, at full size and as tiny stand-ins of the same layout.

Full: SD 1.5's and SDXL base 1.0's ``unet/config.json`` fields that shape the network (as
published). Tiny: the same block pattern, transformer depth ordering, projection style and
added embeddings at toy width, for CPU tests and CPU runs of the benchmarks. ``conditioning``
says what a forward needs besides the latents: the context width and SDXL's added inputs.
"""

from __future__ import annotations

SD15 = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768, attention_head_dim=8)

SDXL = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), use_linear_projection=True,
            cross_attention_dim=2048, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816)

TINY_SD15 = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 16, 32, 32),
                 down_block_types=SD15["down_block_types"], up_block_types=SD15["up_block_types"],
                 cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8)

TINY_SDXL_TIME_DIM, TINY_SDXL_POOLED = 8, 32
TINY_SDXL = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32, 32),
                 down_block_types=SDXL["down_block_types"], up_block_types=SDXL["up_block_types"],
                 transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 4, 4), use_linear_projection=True,
                 cross_attention_dim=16 + 32, addition_embed_type="text_time", addition_time_embed_dim=TINY_SDXL_TIME_DIM,
                 projection_class_embeddings_input_dim=TINY_SDXL_POOLED + 6 * TINY_SDXL_TIME_DIM, norm_num_groups=8)

LAYOUTS = {"sd15": SD15, "sdxl": SDXL, "tiny-sd15": TINY_SD15, "tiny-sdxl": TINY_SDXL}


def conditioning(config: dict) -> dict:
    """What a forward of this UNet takes besides the latents: ``context_dim``, and for SDXL's
    ``text_time`` embedding the pooled width (``pooled_dim``) and the number of size ids."""
    out = {"context_dim": config["cross_attention_dim"]}
    if config.get("addition_embed_type") == "text_time":
        out["pooled_dim"] = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        out["time_ids"] = 6
    return out
