"""A word-level tokenizer for the random tiny test model (``create_tiny_base``), built offline from the protocol.

Its vocabulary is every word the protocol can put in a caption (phrases, answers, part and
category names) plus a few common words, so every caption the flywheel writes tokenizes
without unknown words. It is a fast tokenizer (offset mapping for Daring's token spans),
pads with the end token to CLIP's 77 positions like SD 1.5's tokenizer, and is saved in
the transformers layout so the same loading code serves real CLIP tokenizers.
"""

from __future__ import annotations

import re

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

from flywheel.protocol import Protocol

BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"
EXTRA_WORDS = ("a an the and with in of on wearing photo person people man woman boy girl child adult body "
               "outfit scene background full upper headshot , . - '").split()


def protocol_words(protocol: Protocol) -> list[str]:
    text: list[str] = []
    for name, cat in protocol.categories.items():
        text += [name, cat.part, cat.phrase or "", *cat.answers, *(cat.phrases or {}).values()]
    text += list(protocol.parts) + list(protocol.parsing_classes)
    words = {w for t in text for w in re.findall(r"\w+|[^\w\s]", t.lower().replace("{answer}", " "))}
    return sorted(words | set(EXTRA_WORDS))


def build_tokenizer(protocol: Protocol, max_length: int = 77) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate([BOS, EOS, UNK, *protocol_words(protocol)])}
    tok = Tokenizer(WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and punctuation; new tokens come via add_tokens
    tok.post_processor = TemplateProcessing(single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token=UNK, pad_token=EOS,
                                   model_max_length=max_length)
