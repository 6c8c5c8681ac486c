"""Diffusion backends: one small interface over diffusers pipelines."""

from noisear_rl.pipelines.base import Condition, DiffusionBackend
from noisear_rl.pipelines.factory import list_backends, load_backend
from noisear_rl.pipelines.golden import golden_noise

__all__ = ["Condition", "DiffusionBackend", "golden_noise", "list_backends", "load_backend"]
