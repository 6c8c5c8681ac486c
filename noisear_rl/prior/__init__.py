"""The NoiseAR prior: an autoregressive Gaussian over patches of the initial noise."""

from noisear_rl.prior.model import DecodeState, NoiseARPrior
from noisear_rl.prior.patching import patchify, unpatchify

__all__ = ["DecodeState", "NoiseARPrior", "patchify", "unpatchify"]
