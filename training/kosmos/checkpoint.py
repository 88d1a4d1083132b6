"""A KOSMOS-G model directory: the source model S and AlignerNet, with the base they were aligned to.

Layout (written to a temporary folder, then renamed over the old one, so a crash leaves the previous
directory or the new one, never half of each):

    kosmos.json           S's and AlignerNet's configs, the stage that wrote it, the base model's path and
                          the sha256 digest of its UNet (generation checks it: an aligner is trained against one UNet)
    source/tokenizer/     S's tokenizer (``save_pretrained``)
    source/vision/        S's frozen image tower (``CLIPVisionModel.save_pretrained``)
    source.safetensors    S's own weights (embeddings, resampler, blocks; the LM head is tied to the embeddings)
    aligner.safetensors   AlignerNet, M and N
    checksums.sha256      per-file sha256 (:mod:`flywheel.checksums`), checked at load

The three ``source`` entries are the tiny source model's; a user's Hugging Face model (:mod:`training.kosmos.hf_source`,
used frozen) is not copied: kosmos.json names its path and its config.json digest, checked at load.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from flywheel.atomic import replace_dir
from flywheel.checksums import ChecksumError, verify_checksums, write_checksums
from training.kosmos.aligner import AlignerConfig, AlignerNet
from training.kosmos.source import TinySourceConfig, TinySourceModel

INFO_FILE, SOURCE_WEIGHTS, ALIGNER_WEIGHTS = "kosmos.json", "source.safetensors", "aligner.safetensors"
FORMAT = 1


@dataclass
class KosmosModel:
    source: TinySourceModel  # or HFSourceModel
    aligner: AlignerNet
    info: dict  # kosmos.json: stage, base_model, unet_digest, configs, and what the caller added


def _own_state(source: TinySourceModel) -> dict[str, torch.Tensor]:
    """S's weights without the image tower (saved on its own) and without the tied LM head."""
    return {k: v.contiguous() for k, v in source.state_dict().items()
            if not k.startswith("vision.") and k != "lm_head.weight"}


def save_kosmos(folder: str | Path, source: TinySourceModel, aligner: AlignerNet, *, stage: str, base_model: str,
                unet_digest: str, extra: dict | None = None) -> Path:
    """Write the directory (see the module docstring); returns it."""
    from safetensors.torch import save_file

    from training.kosmos.hf_source import HFSourceModel

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if isinstance(source, HFSourceModel):  # frozen and the user's: referenced, not copied
        source_info = {"kind": "hf", "path": str(source.folder), "config_sha256": source.config_digest}
    else:
        source.tokenizer.save_pretrained(tmp / "source" / "tokenizer")
        source.vision.save_pretrained(tmp / "source" / "vision", safe_serialization=True)
        save_file(_own_state(source), str(tmp / SOURCE_WEIGHTS))
        source_info = {"kind": "tiny", **dataclasses.asdict(source.config)}
    save_file({k: v.contiguous() for k, v in aligner.state_dict().items()}, str(tmp / ALIGNER_WEIGHTS))
    info = {"format": FORMAT, "stage": stage, "base_model": str(base_model), "unet_digest": unet_digest,
            "source": source_info, "aligner": dataclasses.asdict(aligner.config), **(extra or {})}
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True))
    write_checksums(tmp)
    return replace_dir(tmp, folder)


def load_kosmos(folder: str | Path) -> KosmosModel:
    """Load a directory written by :func:`save_kosmos`, its checksums verified first; a missing or changed file is
    an error naming it."""
    from safetensors.torch import load_file
    from transformers import CLIPTokenizer, CLIPVisionModel

    folder = Path(folder)
    if not (folder / INFO_FILE).is_file():
        raise FileNotFoundError(f"{folder}: not a KOSMOS-G model directory (no {INFO_FILE})")
    if not verify_checksums(folder):
        raise ChecksumError(f"{folder}: no checksums.sha256 (a KOSMOS-G directory is written with one)")
    info = json.loads((folder / INFO_FILE).read_text())
    if info.get("format") != FORMAT:
        raise ValueError(f"{folder / INFO_FILE}: format {info.get('format')!r}, this code reads {FORMAT}")
    aligner = AlignerNet(AlignerConfig(**info["aligner"]))
    aligner.load_state_dict(load_file(str(folder / ALIGNER_WEIGHTS)))
    if info["source"]["kind"] == "hf":
        from training.kosmos.hf_source import HFSourceModel, config_digest

        path = Path(info["source"]["path"])
        if not (path / "config.json").is_file() or config_digest(path) != info["source"]["config_sha256"]:
            raise ValueError(f"{folder / INFO_FILE}: its source model {path} is missing or is not the one it was "
                             "aligned to (config.json digest differs)")
        return KosmosModel(HFSourceModel(path), aligner.eval(), info)
    source_config = {k: v for k, v in info["source"].items() if k != "kind"}
    source = TinySourceModel(CLIPTokenizer.from_pretrained(folder / "source" / "tokenizer"),
                             CLIPVisionModel.from_pretrained(folder / "source" / "vision"),
                             TinySourceConfig(**source_config))
    missing, unexpected = source.load_state_dict(load_file(str(folder / SOURCE_WEIGHTS)), strict=False)
    missing = [k for k in missing if not k.startswith("vision.") and k != "lm_head.weight"]
    if missing or unexpected:
        raise ValueError(f"{folder / SOURCE_WEIGHTS}: does not fit the source config (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return KosmosModel(source.eval(), aligner.eval(), info)
