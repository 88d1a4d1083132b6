"""LoRA trainings save an adapter in diffusers' LoRA format (not a merged UNet): diffusers' own
loader reads it into a pipeline of the base, and the registered version (base + adapter) loads
through the evaluation's loader, all with the trained model's output."""

from __future__ import annotations

import json

import pytest
import torch

from tests.training_samples import synthetic_samples
from training.base_model import create_tiny_base, load_base


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, protocol):
    path = tmp_path_factory.mktemp("tiny") / "base"
    create_tiny_base(path, protocol)
    return path


def _inputs(base):
    g = torch.Generator().manual_seed(1)
    h, w = base.unet.config.sample_size
    ctx = base.text_encoder(base.tokenizer(["a woman, red t-shirt"] * 2, padding="max_length", max_length=77,
                                           return_tensors="pt").input_ids)[0].detach()
    return torch.randn(2, 3, h, w, generator=g), torch.tensor([300, 700]), ctx


def _out(unet, inputs):
    x, t, ctx = inputs
    with torch.no_grad():
        return unet(x, t, encoder_hidden_states=ctx).sample


def test_lora_training_saves_an_adapter_diffusers_loads_and_the_registry_serves(tiny, protocol, tmp_path):
    import mlflow
    from diffusers import StableDiffusionPipeline

    from evaluation.models import load_registered
    from flywheel.tracking import TrackingSettings, mlflow_run
    from training.lora import REFERENCE, WEIGHTS, load_trained
    from training.mlflow_model import LORA_PIPELINE, log_and_register
    from training.run import lora_artifacts
    from training.trainer import TrainSettings, train

    torch.set_num_threads(1)
    samples = synthetic_samples(protocol, seed=3, count=8)
    inputs = _inputs(load_base(tiny))
    in_memory = {}

    def keep_output(step, base, unet, dataset, store):  # the trained model as it is in memory after the last step
        was = unet.training
        unet.eval()
        in_memory[step] = _out(unet, inputs)
        unet.train(was)

    settings = TrainSettings(beta=0.0, max_steps=2, batch_size=4, lr=1e-2, lora_rank=4, checkpoint_every=100,
                             log_every=1, attention_log_every=2)
    result = train(settings, tiny, samples, protocol, tmp_path / "lora", on_attention=keep_output)
    trained = in_memory[2]
    folder = result.unet_dir
    assert result.adapter_dir == folder and sorted(p.name for p in folder.iterdir()) == sorted([REFERENCE, WEIGHTS])
    assert json.loads((folder / REFERENCE).read_text())["base_model"] == str(tiny.resolve())
    from safetensors.torch import load_file

    keys = list(load_file(folder / WEIGHTS))
    assert keys and all(k.startswith("unet.") and ".lora." in k for k in keys)  # diffusers' format, adapter only
    base_out = _out(load_base(tiny).unet, inputs)
    assert (trained - base_out).abs().max() > 1e-3  # the adapter learned something: equality below means something

    # diffusers' own loader, into a StableDiffusionPipeline of the base (the tiny base has no VAE)
    b = load_base(tiny)
    pipe = StableDiffusionPipeline(vae=None, text_encoder=b.text_encoder, tokenizer=b.tokenizer, unet=b.unet,
                                   scheduler=b.scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.load_lora_weights(str(folder))
    torch.testing.assert_close(_out(pipe.unet, inputs), trained, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(_out(load_trained(folder).unet, inputs), trained, atol=1e-5, rtol=1e-4)

    # registered as base + adapter; the evaluation's loader reads the version back from the registry
    tracking = TrackingSettings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", artifact_root=str(tmp_path / "mlartifacts"))
    with mlflow_run(tracking, "lora-test", "lora"):
        version, _ = log_and_register(LORA_PIPELINE, lora_artifacts(tiny, folder, tmp_path / "lora"), "cosmicman-lora",
                                      "daring-lora", {"lora_rank": 4}, extra_requirements=("peft",))
    registered = load_registered("cosmicman-lora", version, tmp_path / "cache")
    torch.testing.assert_close(_out(registered.unet, inputs), trained, atol=1e-5, rtol=1e-4)
    assert registered.latent_size == load_base(tiny).latent_size
    model = mlflow.pyfunc.load_model(f"models:/cosmicman-lora/{version}")
    import pandas as pd

    assert model.predict(pd.DataFrame({"prompt": ["a woman, red t-shirt"], "seed": [0]}), params={"steps": 1})[0][:4] \
        == b"\x89PNG"

    # the merged UNet only on request: a plain pipeline, no peft layers
    merged = train(settings.model_copy(update={"lora_merge": True}), tiny, samples, protocol, tmp_path / "merged")
    assert merged.adapter_dir is None and (merged.unet_dir / "model_index.json").exists()
    assert not any("lora" in k for k in load_base(merged.unet_dir).unet.state_dict())


def test_an_adapter_whose_base_is_gone_is_named(tmp_path):
    from training.base_model import BaseModelError
    from training.lora import REFERENCE, WEIGHTS, load_trained

    folder = tmp_path / "final"
    folder.mkdir()
    (folder / WEIGHTS).write_bytes(b"")
    (folder / REFERENCE).write_text(json.dumps({"base_model": str(tmp_path / "missing-base")}))
    with pytest.raises(BaseModelError, match="missing-base"):
        load_trained(folder)
