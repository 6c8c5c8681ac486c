"""The parts of `python -m noisear_rl.train` around its loop: the run's settings and checks
(`config`), its prior, env, prompts and resumed state (`setup`), and the held-out evaluation and
summary (`heldout`). What an algorithm learns from is the algorithm's own (`Algorithm.round_data`)."""
