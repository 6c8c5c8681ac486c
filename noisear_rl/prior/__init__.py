"""The NoiseAR prior: an autoregressive Gaussian over patches of the initial noise."""

from noisear_rl.prior.decoding import DecodeState
from noisear_rl.prior.model import NoiseARPrior
from noisear_rl.prior.patching import patchify, unpatchify

__all__ = ["DecodeState", "NoiseARPrior", "patchify", "unpatchify"]
