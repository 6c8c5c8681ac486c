"""Does what the prior reads say which attribute goes where? Linear probes on the Shapes world.

The RL headroom (`rl_headroom.py`) is in shifts that bind each object's colour and shape to its
position; shifts from the words alone (bag of words) do not help. A prior can learn such shifts
from a few thousand rollouts only if the binding is easy to read from its inputs. This fits ridge
probes on the world's training prompts and scores them on its two-object evaluation prompts
(none seen in fitting), for three feature sets: the condition mean-pooled over tokens, the
condition flattened, and (when a prior is shipped or given) the prior's mean-head input
(teacher-forced on its own samples, averaged over a prompt's noises, flattened over patches). Two targets: the words (which colours,
shapes and positions a prompt names) and the bindings (`attribute_keys`: its (colour, position)
and (shape, position) pairs). The score is recall at k: the share of a prompt's true labels among
its k best-scored ones (k = its number of labels); "chance" is the same probe fitted to labels
permuted across training prompts, and a last row gives the bindings' recall when the words are
known exactly and each named attribute is paired with a named position at random.

    python benchmarks/condition_probe.py [--noises 4] [--ridge 10] [--model DIR] [--prior DIR]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import Tensor

from noisear_rl import NoiseARPrior
from noisear_rl.pipelines import load_backend
from noisear_rl.pipelines.base import Condition
from noisear_rl.worlds.shapes import WORLD, evaluation_prompts, training_prompts
from noisear_rl.worlds.shapes.probe import indicators, recall_at_k, ridge_probe
from noisear_rl.worlds.shapes.world import attribute_keys, parse_prompt


def words(prompt: str) -> list[str]:
    """The colours, shapes and positions `prompt` names."""
    return sorted({word for obj in parse_prompt(prompt) for word in (obj.colour, obj.shape, obj.position)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noises", type=int, default=4, help="prior samples per prompt for its features")
    parser.add_argument("--ridge", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None, help="a Shapes pipeline folder (default: the shipped weights)")
    parser.add_argument("--prior", default=None, help="a prior folder (default: the shipped one, if any)")
    args = parser.parse_args()
    started = time.perf_counter()

    backend = load_backend("shapes", model=args.model)
    prior_path = args.prior or (WORLD.prior if (WORLD.prior / "config.json").is_file() else None)
    prior = NoiseARPrior.from_pretrained(str(prior_path)).eval() if prior_path else None
    train = training_prompts()
    test = [prompt for prompt in evaluation_prompts() if len(parse_prompt(prompt)) == 2]

    def prior_features(cond: Condition) -> Tensor:
        """The prior's mean-head input on its own samples, averaged over a prompt's noises."""
        embeds = cond.embeds.repeat_interleave(args.noises, dim=0)
        captured: dict[str, Tensor] = {}
        hook = prior.mean_head.register_forward_hook(lambda module, inputs, output: captured.update(h=inputs[0]))
        try:
            with torch.no_grad():
                noise = prior.sample(embeds, generator=torch.Generator().manual_seed(args.seed))
                prior.patch_params(noise, embeds)
        finally:
            hook.remove()
        return captured["h"].reshape(len(cond), args.noises, -1).mean(1)

    features: dict[str, Callable[[Condition], Tensor]] = {
        "condition, mean over tokens": lambda cond: cond.embeds.mean(1),
        "condition, flattened": lambda cond: cond.embeds.flatten(1),
        **({"prior's mean-head input": prior_features} if prior is not None else {}),
    }
    train_cond, test_cond = backend.encode(train), backend.encode(test)
    targets = {name: indicators(train + test, labels_of) for name, labels_of in (("words", words), ("bindings", attribute_keys))}
    permutation = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed))

    print(f"ridge probes fitted on {len(train)} training prompts, recall at k on {len(test)} unseen two-object prompts")
    print(f"{'features':>30} | {'target':>8} | recall@k | chance (permuted labels)")
    for feature_name, featurize in features.items():
        train_x, test_x = featurize(train_cond), featurize(test_cond)
        for target_name, (y, _) in targets.items():
            train_y, test_y = y[: len(train)], y[len(train) :]
            recall = recall_at_k(ridge_probe(train_x, train_y, test_x, args.ridge), test_y)
            chance = recall_at_k(ridge_probe(train_x, train_y[permutation], test_x, args.ridge), test_y)
            print(f"{feature_name:>30} | {target_name:>8} | {recall:8.3f} | {chance:.3f}")
    bindings, labels = targets["bindings"]
    named = [set(words(prompt)) for prompt in test]
    guessed = torch.tensor([[float(a in row and q in row) for a, q in labels] for row in named])
    guessed = guessed + 1e-3 * torch.rand(guessed.shape, generator=torch.Generator().manual_seed(args.seed))
    print(f"{'the words, binding guessed':>30} | bindings | {recall_at_k(guessed, bindings[len(train) :]):8.3f} |")
    print(f"\n{time.perf_counter() - started:.0f} s, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
