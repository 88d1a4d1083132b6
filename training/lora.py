"""LoRA adapters of a training: saved in diffusers' LoRA format next to a reference to their base.

An adapter folder holds ``pytorch_lora_weights.safetensors`` exactly as
``StableDiffusionPipeline.save_lora_weights`` writes it (keys ``unet.…lora.down/up``, the peft
config as metadata), so ``pipe.load_lora_weights(folder)`` on a diffusers pipeline of the base
loads it, and ``adapter.json``: the base directory it was trained on, and what the training changed
in the base's UNet config besides the adapter (activation, default sample size). The trainer
writes one unless ``train.lora_merge``; :func:`load_trained` reads a training's final folder
whichever it is, :func:`load_adapter` a base and an adapter kept apart (a registered version).
"""

from __future__ import annotations

import json
from pathlib import Path

from training.base_model import BaseModel, BaseModelError, load_base

WEIGHTS = "pytorch_lora_weights.safetensors"  # diffusers' LORA_WEIGHT_NAME_SAFE
REFERENCE = "adapter.json"
TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]


def lora_config(rank: int):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=TARGET_MODULES)


def is_adapter(folder: Path) -> bool:
    return (Path(folder) / REFERENCE).exists()


def save_adapter(folder: Path, unet, base: BaseModel, base_path: Path, act_fn: str | None = None) -> Path:
    """Write ``unet``'s LoRA layers (peft, adapter "default") to ``folder`` with the reference to ``base_path``."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    if not layers:
        raise ValueError(f"{folder}: the UNet has no LoRA layers to save")
    pipeline = StableDiffusionXLPipeline if base.is_sdxl else StableDiffusionPipeline
    pipeline.save_lora_weights(folder, unet_lora_layers={k: v.detach().cpu().contiguous() for k, v in layers.items()},
                               unet_lora_adapter_metadata=unet.peft_config["default"].to_dict(), safe_serialization=True)
    size = unet.config.sample_size
    (folder / REFERENCE).write_text(json.dumps({
        "base_model": str(Path(base_path).resolve()), "pipeline": pipeline.__name__, "weights": WEIGHTS,
        "rank": unet.peft_config["default"].r, "act_fn": act_fn,
        "sample_size": list(size) if isinstance(size, (list, tuple)) else size}, indent=1))
    return folder


def _reference(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / REFERENCE
    if not path.exists():
        raise BaseModelError(f"{adapter_dir}: not a LoRA adapter folder (no {REFERENCE})")
    if not (Path(adapter_dir) / WEIGHTS).exists():
        raise BaseModelError(f"{adapter_dir}: no {WEIGHTS} next to {REFERENCE}")
    return json.loads(path.read_text())


def load_adapter(base_dir: Path, adapter_dir: Path) -> BaseModel:
    """The base model in ``base_dir`` with the adapter in ``adapter_dir`` loaded into its UNet
    (diffusers' own loader; peft layers kept unfused, as trained)."""
    ref = _reference(adapter_dir)
    base = load_base(base_dir, ref.get("act_fn"))
    base.unet.load_lora_adapter(str(adapter_dir), weight_name=ref.get("weights", WEIGHTS), prefix="unet",
                                adapter_name="default")
    if ref.get("sample_size") is not None:  # the size it was trained at stays the default size
        base.unet.register_to_config(sample_size=ref["sample_size"])
    base.unet.eval()
    return base


def load_trained(folder: Path) -> BaseModel:
    """A training's final folder: a full pipeline, or an adapter on the base it references."""
    folder = Path(folder)
    if not is_adapter(folder):
        return load_base(folder)
    base_dir = Path(_reference(folder)["base_model"])
    if not (base_dir / "model_index.json").exists():
        raise BaseModelError(f"{folder}: its base model {base_dir} (adapter.json) is not a diffusers model directory")
    return load_adapter(base_dir, folder)
