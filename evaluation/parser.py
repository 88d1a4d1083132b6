"""A learned human parser for images without a map (generated images), trained on a snapshot.

The snapshot's train split pairs every image with its 18-class parsing map, which is exactly
the supervision a parser needs. A small fully convolutional encoder-decoder (about 0.3 M
parameters, trainable on CPU in minutes) learns them at a fixed working size; its prediction
is resized back to the image. It is trained once per snapshot version and cached; the judge
uses it in place of the no-weights geometric fallback, and its mIoU on the test split is reported.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from flywheel.protocol import NUM_PARSING_CLASSES


def _block(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(4, cout), nn.SiLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(4, cout), nn.SiLU())


class ParserNet(nn.Module):
    """A three-level U-Net: RGB in, per-pixel class logits out."""

    def __init__(self, width: int = 24, classes: int = NUM_PARSING_CLASSES):
        super().__init__()
        w = width
        self.down = nn.ModuleList([_block(3, w), _block(w, 2 * w), _block(2 * w, 4 * w)])
        self.up = nn.ModuleList([_block(6 * w, 2 * w), _block(3 * w, w)])
        self.head = nn.Conv2d(w, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = block(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="nearest"), skip], 1))
        return self.head(x)


class LearnedParser:
    def __init__(self, size: tuple[int, int] = (96, 64), width: int = 24, seed: int = 0):
        self.size, self.width = tuple(size), width  # (height, width) the net works at
        with torch.random.fork_rng():  # seeded initial weights: the same snapshot gives the same parser
            torch.manual_seed(seed)
            self.net = ParserNet(width)

    def _input(self, images) -> torch.Tensor:
        h, w = self.size
        x = np.stack([cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) for im in images])
        return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1

    @torch.inference_mode()
    def parse(self, image: np.ndarray) -> np.ndarray:
        self.net.eval()
        pred = self.net(self._input([image]))[0].argmax(0).numpy().astype(np.uint8)
        return cv2.resize(pred, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)

    def fit(self, samples, flip: np.ndarray, steps: int = 600, batch_size: int = 16, lr: float = 3e-3, seed: int = 0) -> float:
        """``samples``: (image, parsing map) pairs; ``flip``: the class table that swaps left and
        right (:func:`training.data.flip_table`). Returns the last loss."""
        flip = torch.from_numpy(np.asarray(flip)).long()
        h, w = self.size
        x = self._input([im for im, _ in samples])
        y = torch.from_numpy(np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for _, m in samples])).long()
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        self.net.train()
        loss = torch.tensor(float("nan"))
        for _ in range(steps):
            idx = torch.randint(0, len(x), (min(batch_size, len(x)),), generator=gen)
            xb, yb = x[idx], y[idx]
            if torch.rand(1, generator=gen).item() < 0.5:  # a flip swaps the image's sides, not the labels' meaning
                xb, yb = xb.flip(-1), flip[yb.flip(-1)]
            loss = F.cross_entropy(self.net(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        return float(loss.detach())

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.net.state_dict(), folder / "parser.pt.tmp")
        (folder / "parser.pt.tmp").replace(folder / "parser.pt")
        (folder / "parser.json").write_text(json.dumps({"size": list(self.size), "width": self.width}))

    @classmethod
    def load(cls, folder: Path) -> LearnedParser:
        meta = json.loads((folder / "parser.json").read_text())
        obj = cls(tuple(meta["size"]), meta["width"])
        obj.net.load_state_dict(torch.load(folder / "parser.pt", map_location="cpu", weights_only=True))
        return obj


def pooled_miou(parser, samples) -> float:
    """Mean over classes present in truth or prediction, pooled over the samples."""
    inter, union = np.zeros(NUM_PARSING_CLASSES), np.zeros(NUM_PARSING_CLASSES)
    for image, truth in samples:
        pred = parser.parse(image)
        for c in range(NUM_PARSING_CLASSES):
            p, t = pred == c, truth == c
            inter[c] += (p & t).sum()
            union[c] += (p | t).sum()
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else float("nan")
