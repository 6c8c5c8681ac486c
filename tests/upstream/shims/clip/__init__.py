"""Stub for the undeclared `clip` dependency of `image-reward` 1.5.

ImageReward imports `clip` at module level for its CLIP and aesthetic baselines, which the
agreement test never builds; the reward model itself does not use it.
"""
