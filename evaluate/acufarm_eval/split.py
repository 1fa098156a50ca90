"""Splits by anatomical model, the same for every arm, fixed by a seed.

Groups (models) are shuffled with the split seed. With one fold, the first ⌈test_fraction·G⌉
(at least one) are tested on; with k folds, fold f tests on every k-th group from f. Validation
groups are carved the same way from the rest (at least one), and the remaining groups train.
Test and validation images are always originals; the augmented and `both` arms train on augmented
copies of training groups only.
"""
import math
from dataclasses import dataclass

import numpy as np


class SplitError(ValueError):
    pass


@dataclass(frozen=True)
class Split:
    fold: int
    test: tuple
    val: tuple
    train: tuple

    def rows(self, dataset, groups):
        keep = set(groups)
        return [i for i, g in enumerate(dataset.groups) if g in keep]


def splits(groups, seed, folds=1, test_fraction=0.2, val_fraction=0.2):
    groups = sorted(set(groups))
    g = len(groups)
    if g < 3:
        raise SplitError(f"the original dataset holds {g} anatomical model(s); a split needs at least 3 (train, validation, test) — add models")
    order = [groups[i] for i in np.random.default_rng(seed).permutation(g)]
    out = []
    if folds <= 1:
        n_test = min(max(1, math.ceil(test_fraction * g)), g - 2)
        parts = [order[:n_test]]
        rests = [order[n_test:]]
    else:
        if folds > g - 2:
            raise SplitError(f"{folds} folds need at least {folds + 2} anatomical models, the dataset holds {g}; use fewer folds")
        parts = [order[f::folds] for f in range(folds)]
        rests = [[m for m in order if m not in set(p)] for p in parts]
    for f, (test, rest) in enumerate(zip(parts, rests)):
        n_val = min(max(1, math.ceil(val_fraction * len(rest))), len(rest) - 1)
        val, train = rest[:n_val], rest[n_val:]
        out.append(Split(f, tuple(sorted(test)), tuple(sorted(val)), tuple(sorted(train))))
    return out


def arm_rows(arm, split, datasets):
    """Training rows of an arm: [(dataset name, row), …] in a fixed order."""
    train = set(split.train)
    rows = []
    if arm in ("original", "both"):
        rows += [("original", i) for i, g in enumerate(datasets["original"].groups) if g in train]
    if arm in ("augmented", "both"):
        if "augmented" not in datasets:
            raise SplitError(f"arm `{arm}` needs --augmented")
        aug = datasets["augmented"]
        # A copy belongs to the group of its original (never trusted from the augmented file name alone).
        group_of = dict(zip(datasets["original"].ids, datasets["original"].groups))
        rows += [("augmented", i) for i, s in enumerate(aug.sources) if group_of[s] in train]
    return rows
