"""The pretraining corpus: clean renders of the synthetic source with weak captions.

Renders come from a seed no snapshot uses (``CorpusSettings.seed``), are drawn at
``render_scale`` times the model's resolution and shrunk with area averaging (as the
snapshot's 256x384 images are shrunk for training), and are cached once as one ``.npz``
(images, captions, true answers) keyed by the recipe, so epochs and resumed runs never
re-render. The true answers stay beside the captions for measuring, never for training.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from flywheel.parallel import process_pool
from flywheel.protocol import Protocol, load_protocol
from flywheel.synthetic.scene import render_people
from training.pretrain.settings import CorpusSettings
from training.pretrain.weak_captions import weak_caption


@dataclass
class Corpus:
    images: np.ndarray  # (N, H, W, 3) uint8
    captions: list[str]
    answers: list[dict]

    def __len__(self) -> int:
        return len(self.captions)


def render_one(s: CorpusSettings, protocol: Protocol, index: int) -> tuple[np.ndarray, str, dict]:
    rng = np.random.default_rng([s.seed, index])
    image, _, people, _ = render_people(rng, protocol, s.width * s.render_scale, s.height * s.render_scale,
                                        person_type_weights=s.person_type_weights)
    if s.render_scale > 1:
        image = cv2.resize(image, (s.width, s.height), interpolation=cv2.INTER_AREA)
    answers = people[0].answers
    return image, weak_caption(answers, np.random.default_rng([s.seed, index, 1]), s.captions), answers


def _render_chunk(args) -> list:
    raw, protocol_path, indices = args
    s, protocol = CorpusSettings(**raw), load_protocol(protocol_path)
    return [render_one(s, protocol, i) for i in indices]


def build_corpus(s: CorpusSettings, protocol_path: str | Path | None, cache_dir: Path) -> Corpus:
    """The corpus for ``s``, rendered once and cached under ``cache_dir`` (written atomically)."""
    path = Path(cache_dir) / f"corpus-{s.digest()}-{s.count}.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return Corpus(z["images"], meta["captions"], meta["answers"])
    chunks = [list(range(i, min(i + 500, s.count))) for i in range(0, s.count, 500)]
    protocol_path = str(protocol_path) if protocol_path else None
    results: list = []
    with tqdm(total=s.count, desc="rendering corpus", unit="img") as bar:
        if s.workers > 1:
            with process_pool(s.workers) as pool:
                for part in pool.map(_render_chunk, [(s.model_dump(), protocol_path, c) for c in chunks]):
                    results += part
                    bar.update(len(part))
        else:
            for c in chunks:
                results += _render_chunk((s.model_dump(), protocol_path, c))
                bar.update(len(c))
    corpus = Corpus(np.stack([r[0] for r in results]), [r[1] for r in results], [r[2] for r in results])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, images=corpus.images, meta=json.dumps({"captions": corpus.captions, "answers": corpus.answers}))
    tmp.replace(path)
    return corpus
