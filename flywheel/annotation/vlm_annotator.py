"""The vision-language annotator backend, as the paper's flywheel: a BLIP-2 / InstructBLIP-class
model from a local transformers directory, asked each protocol question and fine-tuned with
LoRA (peft) on the question-answer pairs people labelled.

It answers by ranking, not free generation: every allowed answer of a category is scored by the
language model's mean per-token log-probability after "Question: <question> Answer:", and the
softmax of those scores is the confidence. Answers therefore always lie in the protocol's allowed
set, and the hierarchy is applied as for the other backends. The image it sees is the crop of the
category's part (chosen by the parsing map, see :mod:`crops`), or the body's crop when the part
is absent. Fine-tuning is the language-modelling loss on the labelled answer's tokens; only the
LoRA weights train and only they are saved, next to the path of the base checkpoint.

Needs a decoder-only language model behind the vision encoder (BLIP-2 OPT, InstructBLIP
Vicuna): the scores are read from causal logits. The checkpoint is never downloaded; a missing
directory raises :class:`BackendUnavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from flywheel.annotation.annotator import AnnotatorSettings, SavedAnnotator, hierarchical_answers
from flywheel.annotation.crops import Views
from flywheel.backends import BackendUnavailable
from flywheel.protocol import Protocol

PROMPT = "Question: {question} Answer:"


class VlmAnnotator(SavedAnnotator):
    name = "vlm"
    state_file = "lora.safetensors"

    def __init__(self, protocol: Protocol, settings: AnnotatorSettings | None = None):
        self.protocol = protocol
        self.settings = s = settings or AnnotatorSettings(backend="vlm")
        self.categories = list(protocol.categories)
        if not s.vlm_dir or not Path(s.vlm_dir).is_dir():
            raise BackendUnavailable(f"vlm annotator: no local checkpoint directory at {s.vlm_dir!r} "
                                     "(set annotation.annotator.vlm_dir to a BLIP-2 / InstructBLIP folder)")
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = torch.device(s.vlm_device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.processor = AutoProcessor.from_pretrained(s.vlm_dir, local_files_only=True)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "right"  # answer positions are counted from each row's start
        model = AutoModelForImageTextToText.from_pretrained(s.vlm_dir, local_files_only=True)
        if not getattr(model.config, "use_decoder_only_language_model", True):
            raise BackendUnavailable(f"vlm annotator: {s.vlm_dir} has an encoder-decoder language model; "
                                     "answer ranking needs a decoder-only one (BLIP-2 OPT, InstructBLIP Vicuna)")
        torch.manual_seed(s.seed)
        self.model = get_peft_model(model, LoraConfig(r=s.vlm_lora_rank, lora_alpha=2 * s.vlm_lora_rank, lora_dropout=0.0,
                                                      target_modules=list(s.vlm_lora_targets))).to(self.device)
        self._trailing = self._trailing_special_tokens()
        # tokens each allowed answer takes after the prompt, counted once
        self._answer_lengths = {a: len(self.tokenizer(f" {a}", add_special_tokens=False).input_ids)
                                for c in protocol.categories.values() for a in c.answers}
        self.version = 0

    def _trailing_special_tokens(self) -> int:
        """How many special tokens the tokenizer appends after the text (an EOS, for some)."""
        probe = "Answer: yes"
        plain = self.tokenizer(probe, add_special_tokens=False).input_ids
        full = self.tokenizer(probe).input_ids
        lead = next(i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain)
        return len(full) - lead - len(plain)

    # ---- scoring ---------------------------------------------------------------------------
    def _images(self, views: Views, category: str) -> list[np.ndarray]:
        """HWC RGB crops of the category's part (the body's where the part is absent)."""
        crops = views.crops[:, self.protocol.part_index[category]]
        present = crops[:, 3].reshape(len(crops), -1).any(1)
        crops = np.where(present[:, None, None, None], crops, views.crops[:, self.protocol.body_part_index])
        return [np.ascontiguousarray(c[:3].transpose(1, 2, 0)) for c in crops]

    def _answer_logprob(self, images: list[np.ndarray], question: str, answers: Sequence[str]) -> torch.Tensor:
        """(len(images),) mean log-probability of answers[i]'s tokens after the question, image i."""
        prompt = PROMPT.format(question=question)
        batch = self.processor(images=images, text=[f"{prompt} {a}" for a in answers], padding=True, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        logits = self.model(**batch).logits
        ids = batch["input_ids"]
        logits = logits[:, -ids.shape[1]:]  # text positions, whether or not the model prepends its queries
        logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]  # token j from j-1
        lengths = batch["attention_mask"].sum(1)
        n_answer = torch.tensor([self._answer_lengths[a] for a in answers], device=self.device)
        end = lengths - self._trailing  # one past the answer's last token
        pos = torch.arange(ids.shape[1] - 1, device=self.device)[None] + 1  # the token each logp column scores
        mask = (pos >= (end - n_answer)[:, None]) & (pos < end[:, None])
        return (logp * mask).sum(1) / mask.sum(1).clamp(min=1)

    @torch.inference_mode()
    def probabilities(self, views: Views, batch_size: int | None = None) -> list[np.ndarray]:
        """Per category, (N, n_answers) probabilities, ignoring the hierarchy."""
        self.model.eval()
        bs = batch_size or self.settings.vlm_batch_size
        out = []
        for name in self.categories:
            cat = self.protocol.categories[name]
            images = self._images(views, name)
            scores = np.zeros((len(views), len(cat.answers)), np.float32)
            for i in range(0, len(images), bs):
                chunk = images[i:i + bs]
                rows = [im for im in chunk for _ in cat.answers]
                answers = [a for _ in chunk for a in cat.answers]
                scores[i:i + len(chunk)] = self._answer_logprob(rows, cat.question, answers).view(len(chunk), -1).cpu().numpy()
            e = np.exp(scores - scores.max(1, keepdims=True))
            out.append(e / e.sum(1, keepdims=True))
        return out

    def predict(self, views: Views) -> tuple[list[dict[str, str | None]], list[dict[str, float]]]:
        return hierarchical_answers(self.protocol, self.categories, self.probabilities(views), len(views))

    # ---- learning ----------------------------------------------------------------------------
    def fit(self, views: Views, labels: Sequence[Mapping[str, str]], epochs: int | None = None,
            unlabelled: Views | None = None) -> dict[str, float]:
        """LoRA fine-tuning on every labelled (image, category, answer) so far (``unlabelled``: not used)."""
        s = self.settings
        pairs = [(i, name, lab[name]) for i, lab in enumerate(labels) for name in self.categories if lab.get(name) is not None]
        if not pairs:
            return {"loss": float("nan"), "labels": 0}
        images = {name: self._images(views, name) for name in {p[1] for p in pairs}}
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=s.vlm_lr, weight_decay=0.0)
        gen = torch.Generator().manual_seed(s.seed + self.version)
        self.model.train()
        last = float("nan")
        for _ in range(epochs or s.epochs):
            order = torch.randperm(len(pairs), generator=gen).tolist()
            for k in range(0, len(order), s.vlm_batch_size):
                batch = [pairs[j] for j in order[k:k + s.vlm_batch_size]]
                by_question: dict[str, list] = {}
                for i, name, answer in batch:  # one prompt per forward pass: rows share the question
                    by_question.setdefault(name, []).append((images[name][i], answer))
                loss = sum(-self._answer_logprob([im for im, _ in rows], self.protocol.categories[name].question,
                                                 [a for _, a in rows]).sum()
                           for name, rows in by_question.items()) / len(batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                last = float(loss.detach())
        self.version += 1
        return {"loss": last, "labels": len(pairs), "images": len({p[0] for p in pairs})}

    # ---- persistence: the LoRA weights only (see SavedAnnotator) ---------------------------------
    def _write_state(self, path: Path) -> None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(self.model).items()}, str(path))

    def _read_state(self, path: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        set_peft_model_state_dict(self.model, load_file(str(path), device=str(self.device)))
