"""The pinned torch/torchvision pair works on a CPU-only machine (pyiqa needs torchvision's ops)."""

import torch
import torchvision
from torchvision.ops import nms


def test_torchvision_operators_load_on_cpu():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [20.0, 20.0, 30.0, 30.0]])
    keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    assert torch.__version__.startswith("2.14.1") and torchvision.__version__.startswith("0.29.1")


def test_pyiqa_weight_free_metric_runs():
    import pyiqa

    metric = pyiqa.create_metric("piqe", device="cpu")
    score = float(metric(torch.rand(1, 3, 64, 64)))
    assert metric.lower_better and 0 <= score <= 100
