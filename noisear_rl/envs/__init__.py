"""Gymnasium environments where each patch of the initial noise is an action."""
