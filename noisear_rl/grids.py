"""Captioned image grids (training runs' `images/`, the evaluation's grid.png), with pass/fail borders."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

PASS_COLOUR = (0, 170, 0)
FAIL_COLOUR = (220, 0, 0)
BORDER = 2  # pixels; the border lies in the gap between cells, outside the image


def image_grid(
    images: Tensor, captions: list[str], columns: int = 8, scale: int = 4,
    success: Sequence[float | bool | None] | None = None,
) -> Any:
    """A PIL image: `images` [N, 3, H, W] in [0, 1] upscaled by `scale`, each above its caption.

    Args:
        images: The images.
        captions: One caption per image.
        columns: Images per row (at most N).
        scale: Nearest-neighbour upscaling factor.
        success: Per image, whether it passed (a success value: >= 0.5 passes; None: unknown); a
            passing image gets a thin green border, a failing one a red one.
    """
    import textwrap

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    n, _, h, w = images.shape
    if success is not None and len(success) != n:
        raise ValueError(f"got {len(success)} success values for {n} images")
    cell_w, cell_h = w * scale, h * scale
    chars = max(8, cell_w // 6)
    wrapped = [textwrap.wrap(c, chars)[:5] for c in captions]
    text_h = 11 * max((len(lines) for lines in wrapped), default=0) + 4
    columns = max(1, min(columns, n))
    rows = math.ceil(n / columns)
    canvas = Image.new("RGB", (columns * (cell_w + 4), rows * (cell_h + text_h + 4)), "white")
    draw = ImageDraw.Draw(canvas)
    pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        x, y = BORDER + (i % columns) * (cell_w + 4), BORDER + (i // columns) * (cell_h + text_h + 4)
        canvas.paste(Image.fromarray(pixels[i]).resize((cell_w, cell_h), Image.NEAREST), (x, y))
        if success is not None and success[i] is not None:
            colour = PASS_COLOUR if float(success[i]) >= 0.5 else FAIL_COLOUR
            box = [x - BORDER, y - BORDER, x + cell_w + BORDER - 1, y + cell_h + BORDER - 1]
            draw.rectangle(box, outline=colour, width=BORDER)
        for j, line in enumerate(wrapped[i]):
            draw.text((x + 1, y + cell_h + BORDER + 1 + 11 * j), line, fill="black", font=font)
    return canvas


def success_column(columns: Sequence[str]) -> str | None:
    """The column holding a success value ("success" or "<metric>.success", the first), or None."""
    return next((c for c in columns if c == "success" or c.endswith(".success")), None)
