"""A tiny, randomly initialised BLIP-2 (OPT language model) written offline in transformers
layout, with a word-level tokenizer over the protocol's questions and answers: a real local
checkpoint for the vlm annotator backend's tests."""

from __future__ import annotations

import re
from pathlib import Path

from flywheel.protocol import Protocol


def protocol_tokenizer(protocol: Protocol):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words: set[str] = {"Question", "Answer", ":", "?"}
    for cat in protocol.categories.values():
        for text in (cat.question, *cat.answers):
            words.update(re.findall(r"\w+|[^\w\s]+", text))
    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])  # BOS only, as OPT
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


def write_tiny_blip2(folder: Path, protocol: Protocol, image_size: int = 32, queries: int = 4, seed: int = 0) -> Path:
    import torch
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor

    processor = Blip2Processor(BlipImageProcessor(size={"height": image_size, "width": image_size}),
                               protocol_tokenizer(protocol), num_query_tokens=queries)  # adds the <image> token
    tokenizer = processor.tokenizer
    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            encoder_hidden_size=32, vocab_size=len(tokenizer)),
        text_config=dict(model_type="opt", vocab_size=len(tokenizer), hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                         num_attention_heads=4, word_embed_proj_dim=64, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id),
        num_query_tokens=queries, image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(seed)
    Blip2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
