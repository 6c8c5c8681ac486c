"""A run folder's image grids (pass/fail borders) and what it gives TensorBoard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from noisear_rl.grids import FAIL_COLOUR, PASS_COLOUR, image_grid, success_column
from noisear_rl.run_folder import RunFolder, flatten_config

CONFIG = {"run": {"lr": 1e-5, "prompts": None, "seeds": [0, 1], "progress": True}, "algorithm": {"name": "dpo"}}


def test_grids_mark_pass_and_fail_where_success_is_known() -> None:
    images = torch.full((3, 3, 4, 4), 0.5)
    grid = np.asarray(image_grid(images, ["a", "b", "c"], columns=3, scale=2, success=[1.0, 0.0, None]))
    cell = 4 * 2 + 4  # image side + gap
    assert tuple(grid[0, 0]) == PASS_COLOUR and tuple(grid[0, cell]) == FAIL_COLOUR
    assert tuple(grid[0, 2 * cell]) == (255, 255, 255)  # unknown: no border
    assert tuple(grid[2, 2]) == (128, 128, 128)  # the image itself is untouched
    plain = np.asarray(image_grid(images, ["a", "b", "c"], columns=3, scale=2))
    assert tuple(plain[0, 0]) == (255, 255, 255)
    assert success_column(["shapes", "shapes.success", "shapes.colour"]) == "shapes.success"
    assert success_column(["red"]) is None


def test_tensorboard_gets_the_grids_and_the_hyperparameters(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = RunFolder(tmp_path / "run", config=CONFIG)
    folder.log(12, {"eval/success": 0.5})
    path = folder.save_image_grid("eval-000012", torch.rand(2, 3, 8, 8), ["a", "b"], success=[True, False])
    folder.close()
    assert tuple(np.asarray(Image.open(path))[0, 0]) == PASS_COLOUR
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert [image.step for image in events.Images("images/eval")] == [12]
    assert events.SummaryMetadata("_hparams_/experiment").plugin_data.plugin_name == "hparams"
    assert b'"lr": 1e-05' in events.Tensors("config/text_summary")[0].tensor_proto.string_val[0]
    assert len(list((tmp_path / "run" / "tensorboard").iterdir())) == 1  # one run, not a folder per add_hparams


def test_flatten_config_keeps_what_tensorboard_takes() -> None:
    assert flatten_config(CONFIG) == {"run.lr": 1e-5, "run.prompts": "None", "run.seeds": "[0, 1]", "run.progress": True,
                                      "algorithm.name": "dpo"}
