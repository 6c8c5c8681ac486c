"""Imports every built-in reward module so their `@register_reward` decorators run."""
import noisear_rl.reward_models.imagereward  # noqa: F401
import noisear_rl.reward_models.clip_rewards  # noqa: F401  clipscore, pickscore, aesthetic
import noisear_rl.reward_models.hpsv2  # noqa: F401  hpsv2, hpsv2.1
import noisear_rl.reward_models.jpeg  # noqa: F401  jpeg-compressibility, jpeg-incompressibility
import noisear_rl.worlds.shapes.verifier  # noqa: F401  shapes (the embedded world's verifier)
