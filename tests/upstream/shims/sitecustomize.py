"""Shims that let the `image-reward` 1.5 package import in the throwaway venv of tests/upstream.

Python imports this module at start-up when its folder is on PYTHONPATH. torchvision 0.28 (the
only build matching torch 2.13) is compiled for CUDA; on a CPU machine its compiled operators do
not load and `import torchvision` fails on the missing `nms` schema. Declaring the schemas is
enough for the import; ImageReward only uses torchvision's PIL transforms.
"""

import torch

_torchvision_ops = torch.library.Library("torchvision", "DEF")
_torchvision_ops.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
_torchvision_ops.define("qnms(Tensor dets, Tensor scores, float iou_threshold, Tensor scale, int zero_point) -> Tensor")
