"""The benchmark scripts are not run by the suite (they measure for minutes); they must still import.
`sdxl_scale` also runs at its CPU scale, so the SDXL-size measurement keeps working without a GPU."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

BENCHMARKS = sorted((Path(__file__).parents[1] / "benchmarks").glob("*.py"))


def load_benchmark(path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Imports a benchmark script as a module (registered in `sys.modules` until the test ends:
    dataclasses and tyro look their module up there); runs its imports, not its main."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_there_are_benchmarks() -> None:
    assert {path.stem for path in BENCHMARKS} >= {
        "prior_sampling", "env_throughput", "noise_source_cost", "rl_headroom", "sdxl_scale"
    }


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.stem)
def test_benchmark_imports_and_has_a_main(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_benchmark(path, monkeypatch)
    assert callable(module.main) and module.__doc__


def test_sdxl_scale_runs_at_cpu_scale(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    module = load_benchmark(Path(__file__).parents[1] / "benchmarks" / "sdxl_scale.py", monkeypatch)
    args = ["--scale", "cpu", "--device", "cpu", "--dtypes", "float32", "bfloat16", "--rounds", "1",
            "--num-inference-steps", "2"]

    results = module.run(module.tyro.cli(module.Config, args=args))  # the command line main() parses

    assert [result.dtype for result in results] == ["float32", "bfloat16"]
    for result in results:
        assert result.error is None
        assert result.raw_images_per_s > 0 and result.env_images_per_s > 0
        assert 0 < result.act_share < 1 and 0 < result.sample_share < 1
        assert result.dpo_update_s > 0 and result.ppo_update_s > 0
        assert result.rollout_peak_gib is None and result.update_peak_gib is None  # no GPU
    out = capsys.readouterr().out
    assert "% of the episode's FLOPs" in out
    rows = [line for line in out.splitlines() if line.startswith(("| float32 |", "| bfloat16 |"))]
    assert len(rows) == 2 and rows[1].count("x vs float32") == 1, out


def test_sdxl_scale_full_is_sdxl_base(monkeypatch: pytest.MonkeyPatch) -> None:
    """The full scale's UNet and VAE have stable-diffusion-xl-base-1.0's parameter counts (built on meta)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    module = load_benchmark(Path(__file__).parents[1] / "benchmarks" / "sdxl_scale.py", monkeypatch)
    scale = module.scale_preset("full")
    with torch.device("meta"):
        unet = UNet2DConditionModel(**module.sdxl_unet_config(scale))
        vae = AutoencoderKL(**module.sdxl_vae_config(scale))
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863
    assert unet.config.projection_class_embeddings_input_dim == 2816 and unet.config.cross_attention_dim == 2048


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sdxl_scale_full_size_smoke_on_gpu(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """SDXL's full sizes on a GPU, 2 envs x 2 steps (about a minute): every path runs, no dtype fails."""
    module = load_benchmark(Path(__file__).parents[1] / "benchmarks" / "sdxl_scale.py", monkeypatch)
    module.main(["--scale", "full", "--dtypes", "float16", "bfloat16", "--num-envs", "2", "--num-inference-steps", "2"])
    out = capsys.readouterr().out
    assert out.count("| float16 | ") + out.count("| bfloat16 | ") == 2 and "failed" not in out, out


def test_golden_scale_variants_lengthen_and_repeat_the_golden_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """`x + s d` moves s times as far as the golden step; `golden step xk` is the step applied k times."""
    from noisear_rl.pipelines.golden import golden_noise
    from noisear_rl.worlds.shapes import ShapesBackend
    from noisear_rl.worlds.shapes.pipeline import build_tiny_shapes_pipeline

    module = load_benchmark(Path(__file__).parents[1] / "benchmarks" / "golden_scale.py", monkeypatch)
    backend = ShapesBackend(pipe=build_tiny_shapes_pipeline(), guidance_scale=4.0)
    cond = backend.encode(["a red circle on the left", "a blue square on the top and a green triangle on the bottom"])
    x = torch.randn((2, *backend.latent_shape), generator=torch.Generator().manual_seed(0))

    variants = module.golden_variants(backend, x, cond, scales=[1.0, 3.0], iterations=[2])

    golden = golden_noise(backend, x, cond, 4.0)
    assert list(variants) == ["gaussian", "golden step", "x + 1 d", "x + 3 d", "golden step x2"]
    assert torch.equal(variants["gaussian"], x)
    torch.testing.assert_close(variants["golden step"], golden)
    torch.testing.assert_close(variants["x + 1 d"], golden)
    torch.testing.assert_close(variants["x + 3 d"] - x, 3 * (golden - x))
    torch.testing.assert_close(variants["golden step x2"], golden_noise(backend, golden, cond, 4.0))
    assert (golden - x).abs().mean() > 0


def test_golden_blend_weights_recover_a_known_mixture_of_binding_renders(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image made of the four binding renders plus a background is decomposed into exactly its weights;
    the first-step images of a tiny world have one weight per binding."""
    from noisear_rl.worlds.shapes import ShapesBackend
    from noisear_rl.worlds.shapes.pipeline import build_tiny_shapes_pipeline

    module = load_benchmark(Path(__file__).parents[1] / "benchmarks" / "golden_blend.py", monkeypatch)
    prompt = "a red circle on the left and a blue square on the right"
    assert module.distinct_pair_prompts([prompt, "a red circle on the left", "a red circle on the left and a red square on the right"]) == [prompt]
    renders = module.binding_renders(prompt)
    assert renders.shape == (4, 3, 32, 32)
    assert all(not torch.equal(renders[i], renders[j]) for i in range(4) for j in range(i + 1, 4))
    truth = torch.tensor([0.4, 0.3, 0.2, 0.1])
    image = (truth[:, None, None, None] * renders).sum(0) - 0.25
    torch.testing.assert_close(module.blend_weights(image, renders), truth, atol=1e-4, rtol=0)

    backend = ShapesBackend(pipe=build_tiny_shapes_pipeline(), guidance_scale=4.0)
    x = torch.randn((3, *backend.latent_shape), generator=torch.Generator().manual_seed(0))
    images = module.first_step_images(backend, prompt, x)
    assert list(images) == ["x0 prediction, guidance 0", "x0 prediction, guidance 1", "x0 prediction, guidance 4", "golden move"]
    assert all(image.shape == (3, 32, 32) and torch.isfinite(module.blend_weights(image, renders)).all() for image in images.values())
    # classifier-free guidance is linear in the scale, and so is the x0 prediction
    unconditional, conditional = images["x0 prediction, guidance 0"], images["x0 prediction, guidance 1"]
    assert (conditional - unconditional).abs().max() > 1e-3
    torch.testing.assert_close(images["x0 prediction, guidance 4"], unconditional + 4 * (conditional - unconditional), atol=1e-4, rtol=1e-4)
