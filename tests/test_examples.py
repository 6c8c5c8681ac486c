"""The examples in examples/ and the README's pipeline snippet run (tiny settings, seconds)."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def example(name: str) -> dict[str, Any]:
    """The example's module namespace (its `main` not run)."""
    return runpy.run_path(str(ROOT / "examples" / name), run_name="example")


def test_cleanrl_reinforce_trains(tmp_path: Path) -> None:
    rewards = example("cleanrl_reinforce.py")["main"](
        ["--iterations", "2", "--prompts-per-iteration", "2", "--rollouts-per-prompt", "2", "--num-inference-steps", "2",
         "--save", str(tmp_path / "prior")]
    )
    assert len(rewards) == 2 and all(0 <= r <= 1 for r in rewards)
    assert (tmp_path / "prior" / "config.json").is_file()


def test_sb3_ppo_trains() -> None:
    pytest.importorskip("stable_baselines3", reason="stable-baselines3 is not installed (dev extras)")
    result = example("sb3_ppo.py")["main"](
        ["--total-timesteps", "64", "--n-steps", "32", "--batch-size", "16", "--n-epochs", "1", "--num-inference-steps", "2",
         "--eval-episodes", "1"]
    )
    assert set(result) == {"reward", "success"}


def test_sdxl_example_exits_in_one_line_without_weights(tmp_path: Path, capsys) -> None:
    main = example("sdxl_released_prior.py")["main"]
    assert main(["--prior", str(tmp_path / "absent.pth"), "--output-dir", str(tmp_path / "out")]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("error: no released NoiseAR prior") and "\n" not in message
    (tmp_path / "release.pth").write_bytes(b"")
    assert main(["--prior", str(tmp_path / "release.pth"), "--model", str(tmp_path / "no-sdxl"), "--device", "cpu",
                 "--output-dir", str(tmp_path / "out")]) == 2
    assert "no-sdxl" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()


def readme_snippet(section: str) -> str:
    """The first Python block of a README section (from its "## " heading to the next)."""
    readme = (ROOT / "README.md").read_text()
    body = readme.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", body, re.S).group(1)


def test_readme_shapes_pipeline_snippet_runs_from_any_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(readme_snippet("Use the prior in your own diffusers pipeline"), "README.md", "exec"), namespace)
    assert (tmp_path / "noisear.png").is_file()
    assert namespace["latents"].shape == (2, 3, 32, 32)


def test_shipped_prior_paths_are_absolute_and_only_for_embedded_worlds() -> None:
    import noisear_rl

    path = noisear_rl.shipped_prior("shapes")
    assert path.is_absolute() and (path / "config.json").is_file()
    with pytest.raises(KeyError, match="from_release_checkpoint"):
        noisear_rl.shipped_prior("sdxl")
