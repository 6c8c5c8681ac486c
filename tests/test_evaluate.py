"""`python -m noisear_rl.evaluate`: sources x metrics tables, plots, resumption, statistics."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_noise_sources import PROMPTS, RedReward, ToyBackend

from noisear_rl import evaluate as evaluation
from noisear_rl.evaluate import (
    Cell, EvaluateConfig, cache, evaluate, mean_ci, rate_ci, results_csv, results_markdown, summarise, t_quantile,
    wilson_interval,
)
from noisear_rl.evaluate import run as running

SOURCES = ("gaussian", "best-of-n:4", "erasure-injection?num_noises=2&delta=0.5&label=erasure")


def write_prompt_file(path: Path) -> Path:
    path.write_text("\n".join(PROMPTS * 2) + "\n")  # 6 prompts
    return path


def config_for(tmp_path: Path, **changes) -> EvaluateConfig:
    settings = dict(sources=SOURCES, metrics=("red",), backend="toy", prompts=str(write_prompt_file(tmp_path / "prompts.txt")),
                    seeds=(0, 1), batch_size=4, output_dir=tmp_path / "eval", grid_prompts=3, progress=False)
    return EvaluateConfig(**(settings | changes))


def test_writes_the_tables_grid_and_plot(tmp_path: Path) -> None:
    backend = ToyBackend()
    summary = evaluate(config_for(tmp_path), backend=backend, rewards={"red": RedReward()})
    out = tmp_path / "eval"
    for name in ("results.md", "results.csv", "results.json", "grid.png", "bars.png", "config.json"):
        assert (out / name).is_file(), name
    assert list(summary["results"]) == ["gaussian", "best-of-4", "erasure"]

    rows = list(csv.DictReader((out / "results.csv").open()))
    metrics = {row["metric"] for row in rows}
    assert {"red", "red.success", "red.green", "seconds_per_image.noise", "seconds_per_image.noise_and_generation"} <= metrics
    for row in rows:
        if not row["metric"].startswith("seconds"):
            assert float(row["ci95_low"]) <= float(row["mean"]) <= float(row["ci95_high"])
            assert (row["num_prompts"], row["num_seeds"]) == ("6", "2")
    table = (out / "results.md").read_text()
    assert "| source | red | red.success | red.green | noise s/img | noise+image s/img |" in table
    assert table.count("\n| ") == 4 + 3  # header + 3 sources, header + 2 differences

    # Same seeds: best-of-4 starts from gaussian's noises and keeps the best, per prompt and seed.
    for seed in (0, 1):
        gaussian = evaluation.read_cell(*_cell(tmp_path, "gaussian", "gaussian", seed))
        best = evaluation.read_cell(*_cell(tmp_path, "best-of-4", "best-of-n:4", seed))
        assert gaussian is not None and best is not None
        assert (best.values["red"] >= gaussian.values["red"]).all()
        assert gaussian.grid_images.shape == (3, 3, 8, 8) and gaussian.grid_images.dtype == torch.uint8
    results = summary["results"]
    best_red, gaussian_red = results["best-of-4"]["metrics"]["red"], results["gaussian"]["metrics"]["red"]
    assert best_red["mean"] > gaussian_red["mean"] and "delta" not in gaussian_red
    # The paired difference from the baseline (the first source): the mean of the differences, with its interval.
    assert best_red["delta"] == pytest.approx(best_red["mean"] - gaussian_red["mean"])
    assert 0 < best_red["delta_ci95_low"] <= best_red["delta"] <= best_red["delta_ci95_high"]
    assert "Difference from `gaussian`" in table
    # Each source's cost per image is recorded, the image's generation on top of the noise's (how long
    # either takes is for benchmarks/, not a test on a shared machine).
    for result in results.values():
        seconds = result["seconds_per_image"]
        assert 0 < seconds["noise"] <= seconds["noise_and_generation"]


def _cell(tmp_path: Path, label: str, spec: str, seed: int) -> tuple[Path, str]:
    config = config_for(tmp_path)
    prompts = evaluation.load_prompts(config)
    identity = cache.cell_identity(cache.cell_settings(config, prompts), spec, seed)
    return cache.cell_path(tmp_path / "eval", label, seed), identity


def test_resume_skips_finished_cells_and_recomputes_changed_or_broken_ones(tmp_path: Path, monkeypatch) -> None:
    backend, rewards = ToyBackend(), {"red": RedReward()}
    first = evaluate(config_for(tmp_path, sources=SOURCES[:2]), backend=backend, rewards=rewards)

    loaded: list[str] = []
    real_load = running.load_noise_source
    monkeypatch.setattr(running, "load_noise_source", lambda spec, **kw: loaded.append(spec) or real_load(spec, **kw))
    calls = backend.generate_calls
    again = evaluate(config_for(tmp_path, sources=SOURCES[:2]), backend=backend, rewards=rewards)
    assert loaded == [] and backend.generate_calls == calls and again["results"] == first["results"]

    # A truncated cell (killed mid-write by something else) is recomputed, the others are kept.
    # (A source to compute is loaded twice: once to check it before any work, once for its cells.)
    path, _ = _cell(tmp_path, "gaussian", "gaussian", 1)
    path.write_bytes(path.read_bytes()[:50])
    evaluate(config_for(tmp_path, sources=SOURCES[:2]), backend=backend, rewards=rewards)
    assert loaded == ["gaussian"] * 2
    # A changed option changes the cell's identity; a new source adds its own cells only.
    loaded.clear()
    evaluate(config_for(tmp_path, sources=("gaussian", "best-of-n:4?sampler_seed=1")), backend=backend, rewards=rewards)
    assert loaded == ["best-of-n:4?sampler_seed=1"] * 2
    loaded.clear()
    evaluate(config_for(tmp_path, sources=SOURCES[:2], overwrite=True), backend=backend, rewards=rewards)
    assert loaded == list(SOURCES[:2]) * 2


def test_bad_configs_fail_before_any_work(tmp_path: Path) -> None:
    backend = ToyBackend()
    with pytest.raises(ValueError, match="more than once"):
        evaluate(config_for(tmp_path, sources=("gaussian", "gaussian")), backend=backend, rewards={"red": RedReward()})
    with pytest.raises(ValueError, match="distinct"):
        evaluate(config_for(tmp_path, seeds=(1, 1)), backend=backend, rewards={"red": RedReward()})
    with pytest.raises(FileNotFoundError, match="prompt file"):
        evaluate(config_for(tmp_path, prompts=str(tmp_path / "none.txt")), backend=backend, rewards={"red": RedReward()})
    assert backend.generate_calls == 0


def test_t_quantile_matches_tables() -> None:
    for df, expected in ((1, 12.706), (2, 4.303), (5, 2.571), (10, 2.228), (30, 2.042), (1000, 1.962)):
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-3)


def test_mean_ci_is_a_t_interval_over_prompt_means() -> None:
    values_SP = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])  # 2 seeds x 4 prompts
    mean, low, high = mean_ci(values_SP)
    prompt_means = torch.tensor([0.5, 0.0, 1.0, 1.0], dtype=torch.float64)
    half = t_quantile(0.975, 3) * float(prompt_means.std()) / 2
    assert mean == pytest.approx(0.625) and (low, high) == pytest.approx((0.625 - half, 0.625 + half))
    assert mean_ci(torch.ones(3, 5)) == (1.0, 1.0, 1.0)
    assert math.isnan(mean_ci(torch.ones(1, 1))[1])


def test_rates_get_wilson_intervals_inside_0_1() -> None:
    assert wilson_interval(7 / 8, 8) == pytest.approx((0.5291, 0.9776), abs=1e-4)  # the textbook value
    for values_SP, expected in [(torch.ones(3, 8), 1.0), (torch.zeros(3, 8), 0.0), (torch.ones(1, 1), 1.0)]:
        rate, low, high = rate_ci(values_SP)
        assert rate == expected and 0 <= low <= rate <= high <= 1 and high - low > 0.05  # never a zero-width interval
    assert rate_ci(torch.tensor([[1.0] * 7 + [0.0]])) == pytest.approx((0.875, 0.5291, 0.9776), abs=1e-4)
    _, low, high = mean_ci(torch.tensor([[1.0] * 7 + [0.0]]))
    assert high > 1  # what the t interval did to rates


def test_summary_uses_wilson_for_rates_and_t_for_the_rest(tmp_path: Path) -> None:
    success = {"gaussian": [1.0, 1.0, 1.0, 1.0], "other": [0.0, 1.0, 0.0, 0.0]}
    cells = {
        label: [Cell({"red": torch.tensor([0.2, 0.4, 0.1, 0.3]) + i, "red.success": torch.tensor(values)},
                     torch.rand(4, 3, 8, 8).mul(255).to(torch.uint8), {"noise_seconds": 1.0, "generate_seconds": 1.0,
                                                                       "images": 4.0})]
        for i, (label, values) in enumerate(success.items())
    }
    config = EvaluateConfig(sources=("gaussian", "best-of-n:2?label=other"), seeds=(0,))
    summary = summarise(cells, config, num_prompts=4)
    for result in summary["results"].values():
        rate, red = result["metrics"]["red.success"], result["metrics"]["red"]
        assert rate["interval"] == "wilson" and 0 <= rate["ci95_low"] <= rate["mean"] <= rate["ci95_high"] <= 1
        assert red["interval"] == "t"
    assert summary["results"]["gaussian"]["metrics"]["red.success"]["ci95_high"] == 1.0
    assert "Wilson" in summary["ci"]
    assert summary["results"]["other"]["metrics"]["red.success"]["delta_ci95_low"] < -1  # differences: t, unbounded
    table = results_markdown(summary)
    assert "| gaussian | 0.250 ± 0.205 | 1.000 [0.510, 1.000] |" in table  # a mean ± t half-width, a rate [Wilson]
    rows = list(csv.DictReader(io.StringIO(results_csv(summary))))
    assert {row["interval"] for row in rows if row["metric"] == "red.success"} == {"wilson"}

    from noisear_rl.evaluate.reports import write_outputs

    write_outputs(tmp_path, summary, cells, ["p0", "p3"], [0, 3])
    grid = np.asarray(Image.open(tmp_path / "grid.png"))  # 2 sources a row, cells 128 + 4 pixels wide
    assert tuple(grid[0, 0]) == (0, 170, 0) and tuple(grid[0, 132]) == (220, 0, 0)  # gaussian passed, other failed


def test_cli_on_the_tiny_sdxl_pipeline(tmp_path: Path, monkeypatch, capsys) -> None:
    """The command line end to end on a real (tiny, random) diffusers pipeline with an offline reward."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    argv = ["evaluate", "--backend", "tiny-sdxl", "--num-inference-steps", "1", "--metrics", "jpeg-compressibility",
            "--sources", "gaussian", "best-of-n:2", "--prompts", str(prompts), "--seeds", "0", "--batch-size", "2",
            "--output-dir", str(tmp_path / "eval"), "--no-progress"]
    monkeypatch.setattr(sys, "argv", argv)
    evaluation.main()
    assert "| best-of-2 |" in capsys.readouterr().out
    summary = json.loads((tmp_path / "eval" / "results.json").read_text())
    scores = {label: r["metrics"]["jpeg-compressibility"]["mean"] for label, r in summary["results"].items()}
    assert scores["best-of-2"] >= scores["gaussian"]


def test_shapes_world_verifier_details_become_metrics(tmp_path: Path) -> None:
    """On the (tiny, random) Shapes pipeline with the `shapes` verifier loaded by name."""
    from noisear_rl.worlds.shapes import ShapesBackend, build_tiny_shapes_pipeline

    backend = ShapesBackend(pipe=build_tiny_shapes_pipeline(), num_inference_steps=2)
    config = EvaluateConfig(sources=("gaussian", "erasure-injection?num_noises=2&steps=0,1"), metrics=("shapes",),
                            backend="shapes", prompts="eval", num_prompts=4, seeds=(0,), batch_size=4,
                            output_dir=tmp_path / "eval", grid_prompts=2, progress=False)
    summary = evaluate(config, backend=backend)
    for result in summary["results"].values():
        metrics = result["metrics"]
        assert {"shapes", "shapes.success", "shapes.colour", "shapes.shape", "shapes.position", "shapes.count"} <= set(metrics)
        assert 0 <= metrics["shapes.success"]["mean"] <= metrics["shapes"]["mean"] <= 1
    assert summary["num_prompts"] == 4 and (tmp_path / "eval" / "grid.png").is_file()


def test_cells_stored_with_reward_seconds_still_load(tmp_path: Path) -> None:
    cell = evaluation.Cell({"red": torch.ones(2)}, torch.zeros(0, 3, 1, 1, dtype=torch.uint8),
                           {"noise_seconds": 1.0, "generate_seconds": 2.0, "reward_seconds": 3.0, "images": 2.0})
    evaluation.write_cell(tmp_path / "cell.safetensors", cell, "id")
    loaded = evaluation.read_cell(tmp_path / "cell.safetensors", "id")
    assert loaded is not None and loaded.timing["generate_seconds"] == 2.0


def test_a_cell_of_weights_retrained_under_the_same_path_is_recomputed(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    settings = cache.cell_settings(config, evaluation.load_prompts(config))
    run = tmp_path / "run"
    (run / "prior").mkdir(parents=True)
    (run / "prior" / "weights.safetensors").write_bytes(b"first training")
    spec = f"noisear:{run}?label=tuned"
    before = cache.cell_identity(settings, spec, 0)
    assert cache.cell_identity(settings, spec, 0) == before
    assert cache.cell_identity(settings, f"noisear:{run}?label=other", 0) == before  # the label only names it
    (run / "prior" / "weights.safetensors").write_bytes(b"the same run folder, trained again")
    assert cache.cell_identity(settings, spec, 0) != before
    assert "source_files" not in cache.cell_identity(settings, "gaussian", 0)  # no path: nothing to fingerprint
