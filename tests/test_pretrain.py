"""pretrain-base end to end on a tiny recipe, the weak captions, the CLIP tokenizer, and the checksums."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from training.pretrain.settings import PretrainSettings


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """``pretrain-base`` on the test profile's tiny recipe, tracked in a real MLflow store."""
    from flywheel.settings import load_settings
    from training.stages import pretrain_embedded_base

    root = tmp_path_factory.mktemp("pretrain")
    settings = load_settings("test", workspace=str(root / "workspace"))
    result = pretrain_embedded_base(settings, root / "base", root / "work")
    return root, result, settings


def tiny(settings, **unet) -> PretrainSettings:
    s = settings.training.pretrain.model_copy(deep=True)
    s.unet = s.unet.model_copy(update=unet)
    return s


def test_pretrain_writes_an_sd15_pipeline_that_loads_encodes_decodes_and_samples(pretrained):
    from diffusers import AutoencoderKL

    from training.base_model import load_base
    from training.sampling import generate

    root, result, _ = pretrained
    folder = root / "base"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["vae"] == ["diffusers", "AutoencoderKL"] and index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert {p.name for p in folder.iterdir()} >= {"vae", "unet", "text_encoder", "tokenizer", "scheduler"}
    assert (folder / "tokenizer" / "vocab.json").exists() and (folder / "tokenizer" / "merges.txt").exists()
    assert list((folder / "unet").glob("*.safetensors"))
    base = load_base(folder)
    assert base.vae is not None and base.vae_scale == 4 and base.image_size == (96, 64) and base.latent_size == (24, 16)
    assert isinstance(base.vae, AutoencoderKL)
    assert base.vae.config.scaling_factor == pytest.approx(result.scaling_factor) and result.scaling_factor > 0
    x = torch.rand(2, 3, 96, 64) * 2 - 1
    with torch.no_grad():
        z = base.vae.encode(x).latent_dist.mean
        y = base.vae.decode(z).sample
    assert z.shape == (2, 4, 24, 16) and y.shape == x.shape
    images = generate(base, base.unet, ["a man wearing a red t-shirt"], [0], 96, 64, steps=2)
    assert images.shape == (1, 96, 64, 3) and images.dtype == np.uint8
    # the full CLIP model beside it (the embedded CLIPScore backend)
    from transformers import CLIPModel

    from training.pretrain.run import clip_dir

    clip = CLIPModel.from_pretrained(clip_dir(folder))
    assert clip.config.text_config.hidden_size == 32


def test_pretrain_is_tracked_in_mlflow_with_its_recipe_losses_and_sample_grids(pretrained):
    import mlflow

    root, result, settings = pretrained
    run = mlflow.MlflowClient(settings.tracking.tracking_uri).get_run(result.run_id)
    assert run.data.params["corpus.captions.wrong_word_share"] == "0.1"
    assert run.data.params["unet.steps"] == "4"
    for key in ("vae/l1", "clip/loss", "unet/loss", "seconds_unet", "vae_scaling_factor"):
        assert key in run.data.metrics, key
    history = mlflow.MlflowClient(settings.tracking.tracking_uri).get_metric_history(result.run_id, "unet/loss")
    assert [m.step for m in history] == [1, 2, 3, 4]
    artifacts = mlflow.artifacts.list_artifacts(run_id=result.run_id, tracking_uri=settings.tracking.tracking_uri)
    names = {a.path for a in artifacts}
    assert {"corpus_recipe.json", "README.md", "samples"} <= names
    grids = mlflow.artifacts.list_artifacts(run_id=result.run_id, artifact_path="samples",
                                            tracking_uri=settings.tracking.tracking_uri)
    assert len(grids) == 2  # one mid-run (step 2 of 4) and the final grid
    card = (root / "base" / "README.md").read_text()
    assert "48 clean renders" in card and "total:" in card and "wrong_word_share" in card
    assert 'addition_embed_type="text"' in card  # the pooled-prompt path is named in the UNet row


def test_the_model_card_keeps_figures_and_run_notes_when_rewritten(tmp_path):
    from training.pretrain.card import FIGURES_BEGIN, FIGURES_END, write_card
    from training.pretrain.settings import PretrainSettings

    folder = tmp_path / "base"
    for part in ("vae", "text_encoder", "unet"):
        (folder / part).mkdir(parents=True)
    settings = PretrainSettings().model_dump(mode="json")
    write_card(folder, settings, {"unet": 60.0}, 0.5, notes="- grown at step 2400")
    card = folder / "README.md"
    card.write_text(card.read_text().replace(f"{FIGURES_BEGIN}\n", f"{FIGURES_BEGIN}\n| gender | 0.9 |\n"))
    write_card(folder, settings, {"unet": 120.0}, 0.5)  # a later export, with no notes of its own
    text = card.read_text()
    assert "- grown at step 2400" in text and "| gender | 0.9 |" in text and "- unet: 2.0 min" in text
    assert text.index(FIGURES_END) < text.index("- grown at step 2400")


def test_pretrain_resumes_from_its_checkpoints_and_trains_further(pretrained, tmp_path):
    from training.pretrain.run import pretrain_base

    root, _, settings = pretrained
    state = torch.load(root / "work" / "unet.pt", weights_only=False)
    assert state["step"] == 4
    # a rerun with the same recipe trains no step
    again: list = []
    pretrain_base(tiny(settings), root / "work", tmp_path / "same", on_log=lambda *a: again.append(a))
    assert again == [] and torch.load(root / "work" / "unet.pt", weights_only=False)["step"] == 4
    # more UNet steps continue from step 4, VAE and CLIP untouched
    vae_before = (root / "work" / "vae.pt").stat().st_mtime_ns
    steps: list = []
    pretrain_base(tiny(settings, steps=6), root / "work", tmp_path / "more", on_log=lambda st, k, m: steps.append((st, k)))
    assert steps == [("unet", 5), ("unet", 6)]
    timing = json.loads((root / "work" / "timing.json").read_text())  # every call's wall time, summed
    assert set(timing) == {"corpus", "vae", "latents", "clip", "unet", "export"} and all(v > 0 for v in timing.values())
    assert torch.load(root / "work" / "unet.pt", weights_only=False)["step"] == 6
    assert (root / "work" / "vae.pt").stat().st_mtime_ns == vae_before
    from training.base_model import load_base

    a, b = load_base(tmp_path / "same"), load_base(tmp_path / "more")
    assert not torch.equal(a.unet.conv_in.weight, b.unet.conv_in.weight)
    assert torch.equal(a.vae.encoder.conv_in.weight, b.vae.encoder.conv_in.weight)


def test_a_corrupted_or_missing_weight_file_fails_naming_the_file(pretrained, tmp_path):
    from flywheel.checksums import write_checksums
    from training.base_model import BaseModelError, load_base

    root, *_ = pretrained
    folder = tmp_path / "base"
    shutil.copytree(root / "base", folder)
    write_checksums(folder)
    load_base(folder)  # intact: loads
    weights = next((folder / "unet").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(BaseModelError, match=r"unet/diffusion_pytorch_model\.safetensors: sha256 mismatch"):
        load_base(folder)
    weights.unlink()
    with pytest.raises(BaseModelError, match=r"unet/diffusion_pytorch_model\.safetensors: missing"):
        load_base(folder)


def test_weak_captions_are_short_partial_and_sometimes_wrong(protocol):
    from flywheel.synthetic.attributes import sample_answers
    from training.pretrain.settings import WeakCaptionRecipe
    from training.pretrain.weak_captions import COLOURS, weak_caption

    rng = np.random.default_rng(0)
    people = [sample_answers(rng, protocol, person_type="upper body") for _ in range(400)]
    clean = [weak_caption(a, np.random.default_rng(i), WeakCaptionRecipe(wrong_word_share=0.0, p_filler=0.0))
             for i, a in enumerate(people)]
    noisy = [weak_caption(a, np.random.default_rng(i), WeakCaptionRecipe(wrong_word_share=0.5, p_filler=0.0))
             for i, a in enumerate(people)]
    assert max(len(c.split()) for c in clean) <= 20  # dense CosmicMan-HQ captions run to 60+ words
    assert not any("left" in c or "sleeve" in c for c in clean)  # no part hierarchy

    def colour_errors(captions):
        wrong = 0
        for caption, a in zip(captions, people):
            true = {a.get("top_color"), a.get("dress_color"), a.get("bottom_color"), a.get("hat_color"),
                    a.get("scarf_color"), a.get("shoe_color"), a.get("bag_color")}
            wrong += any(c in caption.split() and c not in true for c in COLOURS)
        return wrong

    assert colour_errors(clean) == 0
    assert colour_errors(noisy) > 40
    named = sum(("woman" in c or "lady" in c) == (a["gender"] == "woman") for c, a in zip(clean, people) if "person" not in c)
    assert named == sum("person" not in c for c in clean)  # with no wrong words, the gender named is the true one


def test_filler_moves_the_content_later_without_changing_it_or_naming_any_attribute(protocol):
    """p_filler wraps a share of captions in alt-text boilerplate (so the content sits deep in the 77 tokens); the
    content is the caption the recipe without filler writes, and no boilerplate word is a word of the protocol."""
    from flywheel.synthetic.attributes import sample_answers
    from training.pretrain.settings import WeakCaptionRecipe
    from training.pretrain.weak_captions import (
        FILLER,
        FILLER_NAMES,
        SHOT_PHRASES,
        weak_caption,
    )

    rng = np.random.default_rng(2)
    people = [sample_answers(rng, protocol) for _ in range(300)]
    plain = [weak_caption(a, np.random.default_rng(i), WeakCaptionRecipe(p_filler=0.0)) for i, a in enumerate(people)]
    padded = [weak_caption(a, np.random.default_rng(i), WeakCaptionRecipe(p_filler=0.5)) for i, a in enumerate(people)]
    assert all(p in f for p, f in zip(plain, padded))
    changed = [f != p for p, f in zip(plain, padded)]
    assert 0.4 < np.mean(changed) < 0.6
    later = [f.index(p) for p, f, c in zip(plain, padded, changed) if c]
    assert np.mean([i > 0 for i in later]) > 0.6 and max(later) > 60  # content after boilerplate, often deep in
    protocol_words = {w for c in protocol.categories.values() for answer in c.answers for w in answer.split()}
    protocol_words |= {w for options in SHOT_PHRASES.values() for p in options for w in p.split()}
    protocol_words -= {"photo", "on", "of", "a"}  # the templates' own words ("photo of ...", "stock photo - ...")
    boiler = {w for text in FILLER + FILLER_NAMES for w in text.replace("{n}", "").replace("{name}", "").split()}
    assert not boiler & protocol_words, boiler & protocol_words


def test_a_bad_filler_fragment_range_is_named():
    """A reversed or negative fragment range fails at the settings, naming the field, not inside numpy."""
    from pydantic import ValidationError

    from training.pretrain.settings import WeakCaptionRecipe

    for bad in ((5, 2), (-1, 3)):
        with pytest.raises(ValidationError, match="filler_fragments"):
            WeakCaptionRecipe(filler_fragments=bad)
    assert WeakCaptionRecipe(filler_fragments=(0, 0)).filler_fragments == (0, 0)


def test_a_drawn_shot_is_written_at_the_recipes_rate(protocol):
    """p_shot is the share of captions that name the shot (rules 1 wrote it in only 3/7 of those)."""
    from flywheel.synthetic.attributes import sample_answers
    from training.pretrain.settings import WeakCaptionRecipe
    from training.pretrain.weak_captions import SHOT_PHRASES, weak_caption

    rng = np.random.default_rng(1)
    people = [sample_answers(rng, protocol, person_type="headshot") for _ in range(600)]
    phrases = [p for options in SHOT_PHRASES.values() for p in options]

    def named(recipe):
        return np.mean([any(p in weak_caption(a, np.random.default_rng(i), recipe) for p in phrases)
                        for i, a in enumerate(people)])

    assert abs(named(WeakCaptionRecipe(p_shot=0.6)) - 0.6) < 0.05
    assert abs(named(WeakCaptionRecipe(p_shot=0.6, rules=1)) - 0.6 * 3 / 7) < 0.05


def test_clip_tokenizer_is_bpe_with_whole_words_and_no_unknowns(tmp_path):
    from transformers import CLIPTokenizer

    from training.pretrain.clip import build_clip_tokenizer

    build_clip_tokenizer(["a woman wearing a red t-shirt", "headshot of a man"], tmp_path / "tok")
    tok = CLIPTokenizer.from_pretrained(tmp_path / "tok")
    assert tok.convert_ids_to_tokens(tok("a red t-shirt").input_ids) == [
        "<|startoftext|>", "a</w>", "red</w>", "t</w>", "-</w>", "shirt</w>", "<|endoftext|>"]
    pieces = tok.convert_ids_to_tokens(tok("zebra").input_ids)[1:-1]  # never seen: split into known byte symbols
    assert "".join(pieces).replace("</w>", "") == "zebra" and len(pieces) > 1
    enc = tok("a red top", padding="max_length", max_length=77, return_offsets_mapping=True)
    assert len(enc.input_ids) == 77 and enc.input_ids[-1] == tok.eos_token_id  # padded with the end token, like SD 1.5
    assert enc.offset_mapping[2] == (2, 5)  # "red": Daring's token spans need offsets


def test_a_fresh_work_folder_continues_from_the_finished_pipeline(pretrained, tmp_path):
    from training.base_model import load_base
    from training.pretrain.continue_from import RecipeMismatch, seed_checkpoints
    from training.pretrain.run import pretrain_base

    root, _, settings = pretrained
    more = tiny(settings, steps=6)
    assert seed_checkpoints(root / "base", tmp_path / "work", more) == ["vae", "clip", "unet"]
    steps: list = []
    pretrain_base(more, tmp_path / "work", tmp_path / "continued", on_log=lambda st, k, m: steps.append((st, k)))
    assert steps == [("unet", 5), ("unet", 6)]  # VAE and CLIP done, the UNet goes on from step 4
    before, after = load_base(root / "base"), load_base(tmp_path / "continued")
    assert torch.equal(before.vae.encoder.conv_in.weight, after.vae.encoder.conv_in.weight)
    assert not torch.equal(before.unet.conv_in.weight, after.unet.conv_in.weight)
    other = tiny(settings, steps=6)
    other.unet = other.unet.model_copy(update={"block_out_channels": (16, 32, 64)})
    with pytest.raises(RecipeMismatch, match="unet settings differ from the pipeline's \\(block_out_channels\\)"):
        seed_checkpoints(root / "base", tmp_path / "other", other)
    with pytest.raises(RecipeMismatch, match="unet.steps 2 is below the 4 steps"):
        seed_checkpoints(root / "base", tmp_path / "fewer", tiny(settings, steps=2))


def test_a_unet_without_the_pooled_prompt_path_grows_it_unchanged_then_learns_it(pretrained):
    """The committed base was trained without ``text_time_embedding``: continuing adds the path
    zero-initialised, so the grown UNet predicts exactly what the trained one did."""
    from diffusers import UNet2DConditionModel

    from training.pretrain.unet import build_unet, grow_unet

    root, _, settings = pretrained
    s = settings.training.pretrain.unet
    trained = UNet2DConditionModel.from_pretrained(root / "base" / "unet")
    assert trained.config.addition_embed_type == ("text" if s.text_time_embedding else None)
    old = build_unet(s.model_copy(update={"text_time_embedding": False}), 4, tuple(trained.config.sample_size),
                     trained.config.cross_attention_dim)
    old.load_state_dict({k: v for k, v in trained.state_dict().items() if not k.startswith("add_embedding.")})
    grown = grow_unet(old, s.model_copy(update={"text_time_embedding": True}))
    x, ctx = torch.randn(2, 4, *trained.config.sample_size), torch.randn(2, 5, trained.config.cross_attention_dim)
    t = torch.tensor([10, 900])
    with torch.no_grad():
        assert torch.allclose(old(x, t, encoder_hidden_states=ctx).sample, grown(x, t, encoder_hidden_states=ctx).sample,
                              atol=1e-6)
        # the path is live: once its gain is non-zero, the pooled prompt changes the prediction
        grown.add_embedding.norm2.weight.fill_(1.0)
        assert not torch.allclose(old(x, t, encoder_hidden_states=ctx).sample,
                                  grown(x, t, encoder_hidden_states=ctx).sample, atol=1e-3)
    wider = s.model_copy(update={"block_out_channels": tuple(2 * c for c in s.block_out_channels)})
    with pytest.raises(ValueError, match="does not fit the settings"):
        grow_unet(old, wider)


def test_the_text_encoder_trained_with_the_unet_is_exported_and_continued_from(pretrained, tmp_path):
    """``text_encoder_lr`` trains the text encoder with the UNet: the pipeline ships that encoder, the
    contrastive CLIP beside it stays as it was (the CLIPScore backend), and a fresh work folder seeded
    from the pipeline goes on from the trained encoder, not from CLIP's."""
    from transformers import CLIPModel, CLIPTextModel

    from training.base_model import load_base
    from training.pretrain.continue_from import seed_checkpoints
    from training.pretrain.run import clip_dir, pretrain_base

    root, _, settings = pretrained
    joint = tiny(settings, steps=6, text_encoder_lr=1e-2, ema_decay=0.5)
    seed_checkpoints(root / "base", tmp_path / "work", joint)
    pretrain_base(joint, tmp_path / "work", tmp_path / "joint")
    clip_text = CLIPModel.from_pretrained(clip_dir(root / "base")).text_model.embeddings.token_embedding.weight
    exported = load_base(tmp_path / "joint").text_encoder.get_input_embeddings().weight
    assert not torch.allclose(clip_text, exported)
    kept = CLIPModel.from_pretrained(clip_dir(tmp_path / "joint")).text_model.embeddings.token_embedding.weight
    assert torch.equal(clip_text, kept)
    state = torch.load(tmp_path / "work" / "unet.pt", weights_only=False)
    assert state["step"] == 6 and state["warmup_from"] == 4 and "ema_text_encoder" in state
    assert len(state["optimizer"]["param_groups"]) == 2

    further = tiny(settings, steps=7, text_encoder_lr=1e-2, ema_decay=0.5)
    json_path = tmp_path / "joint" / "pretrain_settings.json"
    assert json.loads(json_path.read_text())["settings"]["unet"]["text_encoder_lr"] == 1e-2
    seed_checkpoints(tmp_path / "joint", tmp_path / "work2", further)
    seeded = torch.load(tmp_path / "work2" / "unet.pt", weights_only=False)
    trained = CLIPTextModel.from_pretrained(tmp_path / "joint" / "text_encoder").state_dict()
    assert all(torch.equal(seeded["text_encoder"][k], v) for k, v in trained.items())
    steps: list = []
    pretrain_base(further, tmp_path / "work2", tmp_path / "further", on_log=lambda st, k, m: steps.append((st, k)))
    assert steps == [("unet", 7)]


def test_run_notes_survive_an_export_that_replaces_the_pipeline_folder(pretrained):
    """The export swaps the whole folder: the card's run notes are carried over, not lost with it."""
    from training.pretrain.card import NOTES_BEGIN, NOTES_END
    from training.stages import pretrain_embedded_base

    root, _, settings = pretrained
    card = root / "base" / "README.md"
    card.write_text(card.read_text() + f"\n{NOTES_BEGIN}\n- first run: 4 steps\n{NOTES_END}\n")
    pretrain_embedded_base(settings, root / "base", root / "work")  # nothing left to train: export only
    assert "- first run: 4 steps" in card.read_text()


def test_clip_loss_beside_the_diffusion_loss_trains_the_vision_tower_and_exports_the_pair(pretrained, tmp_path):
    """``contrastive_weight`` keeps CLIP's loss while the text encoder trains with the UNet: the loss is
    logged beside the diffusion loss, the vision tower moves, and the CLIP saved beside the pipeline is
    the pair trained together (its text tower is the pipeline's text encoder), resumable from its checkpoint."""
    from transformers import CLIPModel

    from training.base_model import load_base
    from training.pretrain.continue_from import seed_checkpoints
    from training.pretrain.run import clip_dir, pretrain_base

    root, _, settings = pretrained
    s = tiny(settings, steps=6, text_encoder_lr=1e-2, ema_decay=0.5, contrastive_weight=0.5, batch_size=8)
    seed_checkpoints(root / "base", tmp_path / "work", s)
    logged: dict[int, dict] = {}
    pretrain_base(s, tmp_path / "work", tmp_path / "out", on_log=lambda st, k, m: logged.setdefault(k, m))
    assert sorted(logged) == [5, 6]
    assert all(np.isfinite(m["unet/clip_loss"]) and m["unet/clip_loss"] > 0 for m in logged.values())
    before = CLIPModel.from_pretrained(clip_dir(root / "base"))
    after = CLIPModel.from_pretrained(clip_dir(tmp_path / "out"))
    assert not torch.allclose(before.vision_model.embeddings.patch_embedding.weight,
                              after.vision_model.embeddings.patch_embedding.weight)
    assert not torch.equal(before.logit_scale, after.logit_scale)
    exported = load_base(tmp_path / "out").text_encoder.get_input_embeddings().weight
    assert torch.equal(after.text_model.embeddings.token_embedding.weight, exported)
    state = torch.load(tmp_path / "work" / "unet.pt", weights_only=False)
    assert len(state["optimizer"]["param_groups"]) == 3 and "clip" in state
    assert torch.equal(state["clip"]["logit_scale"], after.logit_scale)


def test_the_shot_probe_measures_how_far_apart_two_prompts_are(pretrained):
    """The logged headshot/upper-body distance is zero for the same prompts and positive for different ones."""
    from training.base_model import load_base
    from training.pretrain.clip import hidden_state_distance

    root, _, _ = pretrained
    base = load_base(root / "base")
    same = hidden_state_distance(base.text_encoder, base.tokenizer, ["headshot of a man"], ["headshot of a man"])
    apart = hidden_state_distance(base.text_encoder, base.tokenizer, ["headshot of a man"], ["full-body shot of a man"])
    assert same == 0.0 and apart > 0.01


def test_the_cosine_schedule_warms_up_then_decays_to_its_floor_over_the_runs_own_steps():
    from training.pretrain.settings import UnetSettings
    from training.pretrain.unet import lr_factor

    constant = UnetSettings(steps=1000, warmup_steps=100)
    assert lr_factor(constant, 0, 0) == pytest.approx(0.01)
    assert lr_factor(constant, 999, 0) == 1.0
    # a continuation that started its optimizer at step 600: warm-up 600-699, then down to the floor at 999
    s = UnetSettings(steps=1000, warmup_steps=100, lr_schedule="cosine", min_lr_ratio=0.05)
    assert lr_factor(s, 600, 600) == pytest.approx(0.01)
    assert lr_factor(s, 700, 600) == pytest.approx(1.0)
    assert lr_factor(s, 849, 600) == pytest.approx(0.525, abs=0.01)  # half-way down
    assert lr_factor(s, 999, 600) == pytest.approx(0.05)
    factors = [lr_factor(s, k, 600) for k in range(700, 1000)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))
    with pytest.raises(ValueError, match="lr_schedule"):
        UnetSettings(lr_schedule="linear")
