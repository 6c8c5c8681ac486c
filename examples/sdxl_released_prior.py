"""SDXL with a released NoiseAR prior against Gaussian noise, measured by `noisear_rl.evaluate`.

    python examples/sdxl_released_prior.py --prior noisear_sdxl.pth --device cuda --num-prompts 64

Needs a CUDA GPU and three sets of weights: SDXL (`stabilityai/stable-diffusion-xl-base-1.0` in
the Hugging Face cache, or a local folder as --model), the SDXL checkpoint of the public NoiseAR
release (https://github.com/HKUST-SAIL/NoiseAR, a .pth, as --prior) and the reward's (ImageReward
by default). Where one is absent it exits with a one-line message naming it (status 2).

Both sources get the same prompts and seeds; the prior samples at the release's temperature 0.5.
The tables, a grid and a bar plot go to --output-dir (results.md is printed); rerunning resumes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from noisear_rl.cli import run_command
from noisear_rl.evaluate import EvaluateConfig, evaluate


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", default="noisear_sdxl.pth", help="the release's SDXL checkpoint (.pth)")
    parser.add_argument("--n-heads", type=int, default=1, help="attention heads of the released prior")
    parser.add_argument("--model", default=None, help="SDXL hub id or local folder (default: SDXL base 1.0)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--reward", "--metrics", nargs="+", default=["imagereward"], dest="reward",
                        help="reward names scored on every image (--metrics: the old spelling)")
    parser.add_argument("--num-prompts", type=int, default=64, help="N prompts spread evenly over the shipped list")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--output-dir", default="runs/sdxl-release-eval")
    return parser.parse_args(argv)


def run(argv: list[str]) -> None:
    args = parse_args(argv)
    if not Path(args.prior).is_file():
        raise FileNotFoundError(f"no released NoiseAR prior at {args.prior!r}: download the SDXL checkpoint of "
                                "https://github.com/HKUST-SAIL/NoiseAR and pass --prior PATH")
    config = EvaluateConfig(
        sources=("gaussian", f"noisear:{args.prior}?n_heads={args.n_heads}&label=noisear-release"),
        metrics=tuple(args.reward), backend="sdxl", model=args.model, device=args.device, dtype=args.dtype,
        num_prompts=args.num_prompts, seeds=tuple(args.seeds), batch_size=args.batch_size,
        output_dir=Path(args.output_dir),
    )
    evaluate(config)  # checks every input and loads every model before it writes anything
    print((Path(args.output_dir) / "results.md").read_text(), end="")


def main(argv: Sequence[str] | None = None) -> int:
    """Returns the exit status: 0, or 2 after a one-line error (missing weights among them)."""
    return run_command(run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
