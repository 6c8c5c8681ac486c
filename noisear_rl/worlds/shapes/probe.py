"""Linear probes: does a condition state which attribute goes where?

A prior can learn prompt-specific noise only from what its condition makes easy to read. These
ridge probes, fitted on training prompts and scored on unseen ones, measure it
(`benchmarks/condition_probe.py` prints the full table; the world's tests assert the bindings).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from noisear_rl.worlds.shapes.world import attribute_keys


def indicators(prompts: list[str], labels_of: Callable[[str], list]) -> tuple[Tensor, list]:
    """[N, num_labels] 0/1 matrix of each prompt's labels, and the labels (every label seen) by column."""
    present = [set(labels_of(prompt)) for prompt in prompts]
    labels = sorted(set().union(*present))
    return torch.tensor([[float(label in row) for label in labels] for row in present]), labels


def recall_at_k(scores: Tensor, truth: Tensor) -> float:
    """Mean over rows of the share of true labels among the row's k best scores (k = its true count)."""
    recalls = []
    for row_scores, row_truth in zip(scores, truth):
        k = int(row_truth.sum())
        recalls.append(float(row_truth[row_scores.topk(k).indices].sum()) / k)
    return sum(recalls) / len(recalls)


def ridge_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, ridge: float) -> Tensor:
    """Scores of a ridge regression from standardised features (fitted on train) for test rows."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6

    def design(x: Tensor) -> Tensor:
        return torch.cat([(x - mean) / std, torch.ones(len(x), 1)], dim=1).double()

    a = design(train_x)
    weights = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1], dtype=a.dtype), a.T @ train_y.double())
    return (design(test_x) @ weights).float()


def binding_recall(train_x: Tensor, train_prompts: list[str], test_x: Tensor, test_prompts: list[str], ridge: float = 10.0) -> float:
    """Recall at k of a ridge probe from features to a prompt's (attribute, position) bindings
    (`attribute_keys`), fitted on the training rows and scored on the test rows."""
    labels, _ = indicators(train_prompts + test_prompts, attribute_keys)
    scores = ridge_probe(train_x, labels[: len(train_prompts)], test_x, ridge)
    return recall_at_k(scores, labels[len(train_prompts) :])
