"""noisear-rl: learn and optimize the initial noise of text-to-image diffusion models.

Importing the package registers the Gymnasium environments (`NoiseAR-Shapes-v1`, ...).
"""

from noisear_rl.envs.registration import register_envs
from noisear_rl.prior import NoiseARPrior

__version__ = "0.1.0"
__all__ = ["NoiseARPrior", "__version__"]

register_envs()
