"""The three command lines speak one vocabulary: `--import` of a user's file, one-line errors for
bad names before anything is written, renamed options with their old spellings, `--num-prompts`,
`--dtype`, `--report-to wandb`, pass/fail grids of a training run."""

from __future__ import annotations

import json
import sys
import textwrap
import types
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro
from PIL import Image

import noisear_rl.collect as collect_module
import noisear_rl.evaluate as evaluate_module
import noisear_rl.train as train_module
from noisear_rl.algorithms.base import ALGORITHMS
from noisear_rl.collect import CollectConfig, _load_prompts
from noisear_rl.evaluate import EvaluateConfig, load_prompts
from noisear_rl.grids import FAIL_COLOUR, PASS_COLOUR
from noisear_rl.reward_models import RewardModel, RewardOutput, load_reward_in, register_reward
from noisear_rl.reward_models.registry import REWARDS
from noisear_rl.run_folder import RunFolder
from noisear_rl.training.config import RunConfig, check_resumable, config_record
from noisear_rl.training.heldout import save_grid
from noisear_rl.worlds.shapes import ShapesBackend, build_tiny_shapes_pipeline
from test_reliability import assert_one_line_error, cli
from test_train_cli import configs, tiny_prior

COMMANDS = {"train": train_module.main, "collect": collect_module.main, "evaluate": evaluate_module.main}
PLUGIN = '''
from dataclasses import dataclass

from noisear_rl.algorithms import register_algorithm
from noisear_rl.algorithms.reinforce import Reinforce, ReinforceConfig
from noisear_rl.reward_models import register_reward


@register_reward("user-brightness")
def brightness(images, prompts):
    return images.mean(dim=(1, 2, 3))


@dataclass
class UserConfig(ReinforceConfig):
    """REINFORCE registered from a user's file."""

    marker: int = 7
    """An option of the user's own."""


@register_algorithm("user-reinforce")
class UserReinforce(Reinforce):
    config_class = UserConfig
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory) -> Path:
    """A user's file registering a reward and an algorithm; the registries are restored after."""
    for registry in (ALGORITHMS, REWARDS):
        registry.names()  # the built-ins register first, so the restored registries keep them
    saved = {registry: dict(registry._entries) for registry in (ALGORITHMS, REWARDS)}
    path = tmp_path_factory.mktemp("user") / "my_plugins.py"
    path.write_text(textwrap.dedent(PLUGIN))
    yield path
    for registry, entries in saved.items():
        registry._entries.clear()
        registry._entries.update(entries)
    for name in [n for n in sys.modules if n.startswith("noisear_rl_import_my_plugins")]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def backend() -> ShapesBackend:
    return ShapesBackend(pipe=build_tiny_shapes_pipeline(seed=0), num_inference_steps=2)


def prompt_file(folder: Path) -> Path:
    path = folder / "prompts.txt"
    path.write_text("a red circle\na blue square\na green triangle\n")
    return path


# ----------------------------------------------------------------------------------- --import
def test_train_imports_a_users_file_before_the_algorithm_is_looked_up(plugin, backend, tmp_path, capsys):
    argv = ["--import", str(plugin), "--algo", "user-reinforce", "--reward", "user-brightness"]
    with pytest.raises(SystemExit):
        train_module.parse_args([*argv, "--help"])
    assert "--user-reinforce.marker" in capsys.readouterr().out
    run, algo = train_module.parse_args([*argv, "--user-reinforce.marker", "3", "--output-dir", str(tmp_path / "run")])
    assert run.imports == (str(plugin),) and algo.marker == 3
    small_run, small_algo = configs("reinforce", tmp_path / "run")  # the tiny world's sizes, with the user's names
    run = replace(small_run, algo=run.algo, reward=run.reward, imports=run.imports)
    algo = type(algo)(**{**asdict(small_algo), "marker": 3})
    summary = train_module.train(run, algo, backend=backend, prior=tiny_prior(backend.cond_dim))
    assert summary["algo"] == "user-reinforce" and 0 < summary["heldout_after"]["reward"] < 1  # mean brightness
    assert json.loads((tmp_path / "run" / "config.json").read_text())["run"]["imports"] == [str(plugin)]


def test_collect_and_evaluate_use_a_reward_registered_in_an_imported_file(plugin, tmp_path, capsys):
    prompts = prompt_file(tmp_path)
    collected = tmp_path / "golden"
    argv = ["--import", str(plugin), "--backend", "tiny-sdxl", "--prompts", str(prompts), "--num-prompts", "2",
            "--noises-per-prompt", "2", "--golden", "selected", "--reward", "user-brightness", "--reward-threshold", "0",
            "--output-dir", str(collected), "--no-progress"]
    assert collect_module.main(argv) == 0
    assert json.loads((collected / "manifest.json").read_text())["num_pairs"] == 4  # every brightness > 0
    argv = ["--import", str(plugin), "--backend", "tiny-sdxl", "--num-inference-steps", "1", "--reward", "user-brightness",
            "--prompts", str(prompts), "--seeds", "0", "--output-dir", str(tmp_path / "eval"), "--no-progress"]
    assert evaluate_module.main(argv) == 0
    summary = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert 0 < summary["results"]["gaussian"]["metrics"]["user-brightness"]["mean"] < 1


@pytest.mark.parametrize(
    ("value", "needles"),
    [
        ("no_such_module_xyz", ["--import no_such_module_xyz: no module named 'no_such_module_xyz'", ".py file"]),
        ("missing/plugin.py", ["--import missing/plugin.py: no such file"]),
        ("{broken}", ["failed: ZeroDivisionError: division by zero"]),
    ],
)
@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_import_fails_in_one_line_writing_nothing(command, value, needles, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    broken = tmp_path / "broken.py"
    broken.write_text("1 / 0\n")
    code, lines = cli(COMMANDS[command], ["--import", value.format(broken=broken), "--output-dir", "out"], capsys)
    assert_one_line_error(code, lines, *needles)
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ bad names
@pytest.mark.parametrize(
    ("command", "argv", "needles"),
    [
        ("train", ["--reward", "no-such-reward"], ["unknown reward 'no-such-reward'", "valid names: ", "--import"]),
        ("collect", ["--reward", "no-such-reward"], ["unknown reward 'no-such-reward'", "valid names: ", "--import"]),
        ("evaluate", ["--reward", "no-such-reward"], ["unknown reward 'no-such-reward'", "valid names: ", "--import"]),
        ("evaluate", ["--metrics", "shapes:1,nope:1"], ["unknown reward 'nope' in spec 'shapes:1,nope:1'", "--import"]),
        ("train", ["--algo", "nope"], ["unknown algorithm 'nope'", "reinforce", "--import"]),
        ("train", ["--env", "NoiseAR-Nope-v0"], ["unknown environment 'NoiseAR-Nope-v0'", "--import"]),
        ("collect", ["--backend", "nope"], ["unknown diffusion backend 'nope'", "tiny-sdxl", "--import"]),
        ("evaluate", ["--sources", "nope"], ["unknown noise source 'nope'", "gaussian", "--import"]),
    ],
)
def test_every_cli_rejects_a_bad_name_in_one_line_writing_nothing(command, argv, needles, tmp_path, capsys):
    code, lines = cli(COMMANDS[command], [*argv, "--output-dir", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, lines, *needles)
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------- one vocabulary, old spellings
@pytest.mark.parametrize("command", COMMANDS)
def test_usage_lines_name_the_module_and_the_shared_options(command, capsys):
    with pytest.raises(SystemExit):
        COMMANDS[command](["--help"])
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python -m noisear_rl.{command} ")
    for option in ("--output-dir", "--reward", "--device", "--dtype", "--model", "--threads", "--import"):
        assert option in text, option


def test_old_spellings_still_parse_and_are_marked_deprecated(capsys):
    assert tyro.cli(CollectConfig, args=["--out", "x"]).output_dir == tyro.cli(CollectConfig, args=["--output-dir", "x"]).output_dir
    old, new = (tyro.cli(EvaluateConfig, args=[flag, "a", "b"]).metrics for flag in ("--metrics", "--reward"))
    assert old == new == ("a", "b")
    for main in (collect_module.main, evaluate_module.main):
        with pytest.raises(SystemExit):
            main(["--help"])
        assert "(Deprecated:" in capsys.readouterr().out


def test_num_prompts_spreads_over_the_set_in_every_command(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("".join(f"prompt {i}\n" for i in range(9)))
    expected = ["prompt 0", "prompt 4", "prompt 8"]
    assert load_prompts(EvaluateConfig(backend="tiny-sdxl", prompts=str(path), num_prompts=3)) == expected
    assert _load_prompts(CollectConfig(backend="tiny-sdxl", prompts=str(path), num_prompts=3)) == expected


def test_train_takes_threads_model_and_dtype():
    run, _ = train_module.parse_args(["--threads", "1", "--dtype", "bfloat16", "--model", "some/folder",
                                      "--eval-prompts", "eval", "--train-prompts", "train"])
    assert (run.threads, run.dtype, run.model, run.eval_prompts) == (1, "bfloat16", "some/folder", "eval")


def test_a_run_started_before_a_setting_existed_resumes_at_its_default(tmp_path):
    run, algo = configs("reinforce", tmp_path)
    record = config_record(run, algo, 1)
    stored = json.loads(json.dumps(record))
    del stored["run"]["dtype"], stored["run"]["model"]
    check_resumable(tmp_path, stored, record)  # absent: the defaults, float32 and the backend's weights
    with pytest.raises(ValueError, match="run.dtype: 'float32' -> 'bfloat16'"):
        check_resumable(tmp_path, stored, config_record(RunConfig(**{**vars(run), "dtype": "bfloat16"}), algo, 1))


# ---------------------------------------------------------------------------------- --dtype
@register_reward("test-typed-reward")
class TypedReward(RewardModel):
    """A reward with a network, built in the dtype it is given."""

    def __init__(self, dtype: torch.dtype | str = torch.float32, device: str | None = None) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 1).to(device=device, dtype=getattr(torch, str(dtype).removeprefix("torch.")))

    def compute(self, images: torch.Tensor, prompts: list[str]) -> RewardOutput:
        pixels = images.mean(dim=(2, 3)).to(self.linear.weight.dtype)
        return RewardOutput(scores=self.linear(pixels).squeeze(-1).float())


def test_dtype_reaches_the_rewards_that_take_one():
    assert load_reward_in("test-typed-reward", "bfloat16").linear.weight.dtype == torch.bfloat16
    composite = load_reward_in("test-typed-reward:1.0,shapes:1.0", "bfloat16")
    typed, verifier = composite.rewards
    assert typed.linear.weight.dtype == torch.bfloat16 and type(verifier).__name__ == "ShapesVerifier"
    assert load_reward_in("shapes", "float16") is not None  # no dtype argument for a verifier


def test_train_dtype_reaches_the_backend_and_reward_and_the_prior_stays_float32(tmp_path, monkeypatch):
    """`--dtype` end to end: the env's backend and reward get it, and a run on a half-precision
    pipeline (bfloat16, the CPU's) trains a float32 prior."""
    import gymnasium as gym

    from noisear_rl.training.setup import make_env

    made = {}
    monkeypatch.setattr(gym, "make_vec", lambda env_id, **kwargs: made.update(kwargs))
    make_env(RunConfig(dtype="bfloat16", model="my/weights"), None, 8)
    assert (made["dtype"], made["model"]) == ("bfloat16", "my/weights")
    monkeypatch.undo()

    half = ShapesBackend(pipe=build_tiny_shapes_pipeline(seed=0), num_inference_steps=2, dtype=torch.bfloat16)
    venv = gym.make_vec("NoiseAR-Shapes-v1", num_envs=2, vectorization_mode="vector_entry_point", backend=half,
                        dtype="bfloat16", reward="test-typed-reward:1.0,shapes:1.0")
    assert venv.unwrapped.world.reward.rewards[0].linear.weight.dtype == torch.bfloat16
    run, algo = configs("reinforce", tmp_path / "run", iterations=1, dtype="bfloat16")
    prior = tiny_prior(half.cond_dim)
    summary = train_module.train(run, algo, backend=half, prior=prior)
    assert {p.dtype for p in prior.parameters()} == {torch.float32}
    assert np.isfinite(summary["heldout_after"]["reward"])


# ------------------------------------------------------------------------------ --report-to
def test_report_to_wandb_without_wandb_is_a_one_line_error_naming_the_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # not importable, wherever it is installed
    code, lines = cli(train_module.main, ["--report-to", "wandb", "--output-dir", str(tmp_path / "out")], capsys)
    assert_one_line_error(code, lines, "--report-to wandb", "pip install wandb")
    assert not (tmp_path / "out").exists()


def test_report_to_wandb_gets_the_scalars_grids_and_config(tmp_path, monkeypatch):
    calls: list[tuple] = []
    run = types.SimpleNamespace(log=lambda data, step: calls.append(("log", step, sorted(data))),
                                finish=lambda: calls.append(("finish",)))
    fake = types.SimpleNamespace(init=lambda **kwargs: calls.append(("init", kwargs["config"], kwargs["resume"])) or run,
                                 Image=lambda image: image)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    folder = RunFolder(tmp_path / "run", tensorboard=False, config={"run": {"seed": 0}}, report_to=("wandb",))
    folder.log(1, {"train/loss": 0.5})
    folder.save_image_grid("eval-000001", torch.zeros(2, 3, 8, 8), ["a", "b"])
    folder.close()
    assert calls == [("init", {"run": {"seed": 0}}, "allow"), ("log", 1, ["train/loss"]), ("log", 1, ["images/eval"]),
                     ("finish",)]


# ---------------------------------------------------------------------------------- grids
def test_save_grid_borders_each_prompts_first_noise_by_its_success(tmp_path):
    saved = {}
    folder = types.SimpleNamespace(save_image_grid=lambda name, images, prompts, success: saved.update(success=success))
    episodes = {"reward": [0.0] * 6, "success": [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]}
    save_grid(folder, "eval-000000", torch.zeros(3, 3, 8, 8), ["a", "b", "c"], episodes, noises_per_prompt=2)
    assert saved["success"] == [1.0, 0.0, 1.0]
    save_grid(folder, "eval-000000", torch.zeros(3, 3, 8, 8), ["a", "b", "c"], {"reward": [0.0] * 3}, 1)
    assert saved["success"] is None  # a reward without a success: no borders


def test_training_grids_mark_pass_and_fail_before_during_and_after(backend, tmp_path):
    run, algo = configs("reinforce", tmp_path / "run", iterations=2, eval_every=1, tensorboard=False)
    train_module.train(run, algo, backend=backend, prior=tiny_prior(backend.cond_dim))
    for step in (0, 1, 2):
        pixels = np.asarray(Image.open(tmp_path / "run" / "images" / f"eval-{step:06d}.png")).reshape(-1, 3)
        colours = {tuple(p) for p in pixels[:: 7]} | {tuple(pixels[0])}
        assert colours & {PASS_COLOUR, FAIL_COLOUR}, step
