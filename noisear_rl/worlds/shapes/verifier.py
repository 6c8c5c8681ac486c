"""`shapes`: the exact, GenEval-like verifier of the embedded Shapes world.

For every object a prompt asks for it checks that an object of that colour is drawn, that it has
the requested shape and sits at the requested position; and it checks that nothing else is drawn
(the count). The score is the fraction of these checks that pass (1.0 exactly when all pass).

How it reads an image: pixels brighter than `brightness_threshold` (max channel) are ink; ink is
classified by its nearest palette colour after normalising away brightness (far from every palette
colour: "other"); each colour's mask is split into 8-connected components, and components smaller
than `min_area` pixels (speckle) are ignored. A component's shape comes from its fill ratio in its
bounding box (square ~1, circle ~0.79, triangle ~0.5) and how its mass splits between the upper and
lower halves (a triangle, apex up, has a quarter above); its position from its centroid relative to
the image centre (the dominant axis of the offset).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from noisear_rl.worlds.shapes.world import COLOURS, IMAGE_SIZE, Scene, parse_prompt
from noisear_rl.reward_models.base import RewardModel, RewardOutput
from noisear_rl.reward_models.registry import register_reward

CRITERIA = ("colour", "shape", "position", "count")


@dataclass(frozen=True)
class DrawnObject:
    """An object the verifier read in an image: one connected component of one palette colour
    ("other" when the ink is far from every palette colour); `position` is None near the centre."""

    colour: str
    shape: str
    position: str | None
    area: int


def match_objects(scene: Scene, drawn: list[DrawnObject]) -> list[DrawnObject | None]:
    """For each requested object, the drawn object its checks read: the largest one of its colour
    (None when no object of that colour is drawn)."""
    return [max((d for d in drawn if d.colour == obj.colour), key=lambda d: d.area, default=None) for obj in scene]


def scene_checks(scene: Scene, drawn: list[DrawnObject]) -> dict[str, list[bool]]:
    """Each criterion's checks (one per requested object; one for the count) of a scene against
    the objects drawn in an image: the image passes the scene when every check does."""
    matched = match_objects(scene, drawn)
    return {
        "colour": [found is not None for found in matched],
        "shape": [found is not None and found.shape == obj.shape for obj, found in zip(scene, matched)],
        "position": [found is not None and found.position == obj.position for obj, found in zip(scene, matched)],
        "count": [len(drawn) == len(scene)],
    }


@register_reward("shapes")
class ShapesVerifier(RewardModel):
    """Checks colour, shape and position of each requested object and that nothing else is drawn.

    Args:
        brightness_threshold: Max-channel value above which a pixel is ink (background is black).
        colour_tolerance: Largest distance of a brightness-normalised pixel to its palette colour;
            farther pixels are ink of an "other" colour (any such object fails the count).
        min_area: Components smaller than this many pixels (at 32x32; scaled with image area) are
            speckle and ignored.
        min_offset: Centroids closer than this many pixels (at 32x32) to the centre have no position.
        device: Ignored beyond API symmetry (the verifier runs on the images' device, then NumPy).
    """

    def __init__(
        self,
        brightness_threshold: float = 0.5,
        colour_tolerance: float = 0.6,
        min_area: int = 12,
        min_offset: float = 3.0,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        self.brightness_threshold = brightness_threshold
        self.colour_tolerance = colour_tolerance
        self.min_area = min_area
        self.min_offset = min_offset
        self.register_buffer("palette", torch.tensor(list(COLOURS.values()), dtype=torch.float32), persistent=False)
        if device is not None:
            self.to(device)

    def compute(self, images: Tensor, prompts: list[str]) -> RewardOutput:
        return self.score_drawn(self.read(images), prompts, images.device)

    def score_drawn(self, drawn_B: list[list[DrawnObject]], prompts: list[str], device: str | torch.device = "cpu") -> RewardOutput:
        """The reward of images already read (`read`): for a caller that also needs the objects,
        so that each image is read once."""
        scenes = [parse_prompt(p) for p in prompts]
        scores, flags = [], {name: [] for name in (*CRITERIA, "success")}
        detected = []
        for drawn, scene in zip(drawn_B, scenes):
            detected.append(len(drawn))
            checks = scene_checks(scene, drawn)
            results = [r for name in CRITERIA for r in checks[name]]
            scores.append(sum(results) / len(results))
            for name in CRITERIA:
                flags[name].append(all(checks[name]))
            flags["success"].append(all(results))
        details = {name: torch.tensor(values, dtype=torch.float32, device=device) for name, values in flags.items()}
        details["num_objects"] = torch.tensor(detected, dtype=torch.float32, device=device)
        return RewardOutput(scores=torch.tensor(scores, dtype=torch.float32, device=device), details=details)

    def read(self, images: Tensor) -> list[list[DrawnObject]]:
        """The objects drawn in each of the images [B, 3, H, W]: what every check reads."""
        scale = images.shape[-1] / IMAGE_SIZE  # the defaults are at the world's resolution
        return [
            [
                DrawnObject(c["colour"], c["shape"], self._position(c["centroid"], images.shape[-1], scale), c["area"])
                for c in self._components(labels_KHW, min_area=self.min_area * scale**2)
            ]
            for labels_KHW in self.component_labels(images)
        ]

    def component_labels(self, images: Tensor) -> np.ndarray:
        """Labels [B, K, H, W] (int, 0 = none) of 8-connected components per colour class.

        K is the palette size plus one "other" class.
        """
        brightness = images.amax(dim=1, keepdim=True)
        ink = brightness > self.brightness_threshold
        normalised = images / brightness.clamp_min(1e-6)
        distance_BPHW = torch.cdist(
            normalised.permute(0, 2, 3, 1).reshape(-1, 3), self.palette.to(images.device)
        ).reshape(images.shape[0], images.shape[2], images.shape[3], -1).permute(0, 3, 1, 2)
        nearest_dist, nearest = distance_BPHW.min(dim=1, keepdim=True)
        klass = torch.where(nearest_dist <= self.colour_tolerance, nearest, torch.full_like(nearest, len(COLOURS)))
        masks_BKHW = ink & (klass == torch.arange(len(COLOURS) + 1, device=images.device).view(1, -1, 1, 1))
        return connected_components(masks_BKHW).cpu().numpy()

    def _components(self, labels_KHW: np.ndarray, min_area: float) -> list[dict]:
        """Area, colour, centroid and shape of every component at least `min_area` pixels large."""
        colour_names = [*COLOURS, "other"]
        components = []
        for k, labels in enumerate(labels_KHW):
            ids, counts = np.unique(labels[labels > 0], return_counts=True)
            for label, area in zip(ids, counts):
                if area < min_area:
                    continue
                rows, cols = np.nonzero(labels == label)
                components.append(
                    {
                        "colour": colour_names[k],
                        "area": int(area),
                        "centroid": (cols.mean() + 0.5, rows.mean() + 0.5),
                        "shape": classify_shape(rows, cols),
                    }
                )
        return components

    def _position(self, centroid: tuple[float, float], size: int, scale: float) -> str | None:
        dx, dy = centroid[0] - size / 2, centroid[1] - size / 2
        if max(abs(dx), abs(dy)) < self.min_offset * scale:
            return None
        if abs(dx) >= abs(dy):
            return "left" if dx < 0 else "right"
        return "top" if dy < 0 else "bottom"


def classify_shape(rows: np.ndarray, cols: np.ndarray) -> str:
    """Circle, square or triangle (apex up) from a component's pixel coordinates."""
    top, bottom = rows.min(), rows.max()
    height, width = bottom - top + 1, cols.max() - cols.min() + 1
    fill = len(rows) / float(height * width)
    middle = (top + bottom) / 2.0
    upper_share = (np.sum(rows < middle) + 0.5 * np.sum(rows == middle)) / len(rows)
    if fill < 0.65 or upper_share < 0.38:
        return "triangle"
    return "square" if fill > 0.88 else "circle"


def connected_components(masks: Tensor, max_iterations: int = 256) -> Tensor:
    """8-connected component labels of boolean masks [..., H, W] (0 = background).

    Label propagation: every pixel starts with its own id and repeatedly takes the largest id in its
    3x3 neighbourhood within the mask, until nothing changes.
    """
    shape = masks.shape
    flat = masks.reshape(-1, 1, shape[-2], shape[-1])
    ids = torch.arange(1, flat[0].numel() + 1, device=masks.device, dtype=torch.float32).view(1, 1, *shape[-2:])
    labels = torch.where(flat, ids, torch.zeros_like(ids))
    for _ in range(max_iterations):
        grown = torch.where(flat, F.max_pool2d(labels, 3, stride=1, padding=1), labels)
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels.long().reshape(shape)


__all__ = ["CRITERIA", "ShapesVerifier", "classify_shape", "connected_components"]
