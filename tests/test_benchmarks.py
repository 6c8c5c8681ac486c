"""The benchmark scripts are not run by the suite (they measure for minutes); they must still import."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).parents[1] / "benchmarks").glob("*.py"))


def test_there_are_benchmarks() -> None:
    assert {path.stem for path in BENCHMARKS} >= {"prior_sampling", "env_throughput", "noise_source_cost", "rl_headroom"}


@pytest.mark.parametrize("path", BENCHMARKS, ids=lambda path: path.stem)
def test_benchmark_imports_and_has_a_main(path: Path) -> None:
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)  # runs the imports, not main (each script guards it)
    finally:
        del sys.modules[spec.name]
    assert callable(module.main) and module.__doc__
