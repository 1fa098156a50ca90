"""Splits by anatomical model: disjoint, seeded, and the augmented arms never train on copies of
validation or test models."""
import numpy as np
import pytest

from acufarm_eval import split
from acufarm_eval.data import Dataset


def fake(name, groups, sources=None):
    n = len(groups)
    ids = [f"{name}{i}" for i in range(n)]
    return Dataset(name, "", ids, list(groups), list(groups), [""] * n, sources or ids, np.zeros((n, 1), np.float32), np.zeros((n, 1, 2), np.float32))


GROUPS = [f"M_P{i}" for i in range(7) for _ in range(3)]


@pytest.mark.parametrize("folds", [1, 3])
def test_splits_are_disjoint_and_cover_every_model(folds):
    plans = split.splits(GROUPS, seed=4, folds=folds)
    assert len(plans) == folds
    for s in plans:
        assert s.test and s.val and s.train
        assert not set(s.test) & set(s.val) and not set(s.test) & set(s.train) and not set(s.val) & set(s.train)
        assert set(s.test) | set(s.val) | set(s.train) == set(GROUPS)
    if folds > 1:
        tested = [m for s in plans for m in s.test]
        assert sorted(tested) == sorted(set(GROUPS))  # every model tested exactly once


def test_same_seed_same_split_other_seed_other_split():
    assert split.splits(GROUPS, seed=1) == split.splits(GROUPS, seed=1)
    assert any(split.splits(GROUPS, seed=s) != split.splits(GROUPS, seed=1) for s in range(2, 6))


def test_too_few_models_is_refused():
    with pytest.raises(split.SplitError, match="at least 3"):
        split.splits(["a", "a", "b"], seed=0)


def test_augmented_arms_train_only_on_copies_of_training_models():
    original = fake("o", GROUPS)
    # every original has two copies; the copies' own group field lies (says P0) to show it is not trusted
    sources = [i for i in original.ids for _ in range(2)]
    augmented = fake("a", ["M_P0"] * len(sources), sources)
    datasets = {"original": original, "augmented": augmented}
    s = split.splits(GROUPS, seed=2)[0]
    group_of = dict(zip(original.ids, original.groups))
    for arm in ("augmented", "both"):
        rows = split.arm_rows(arm, s, datasets)
        aug = [i for d, i in rows if d == "augmented"]
        assert aug and all(group_of[augmented.sources[i]] in s.train for i in aug)
        assert not any(group_of[augmented.sources[i]] in set(s.val) | set(s.test) for i in aug)
    both = split.arm_rows("both", s, datasets)
    assert len(both) == len(split.arm_rows("original", s, datasets)) + len(split.arm_rows("augmented", s, datasets))
    assert all(original.groups[i] in s.train for d, i in split.arm_rows("original", s, datasets))
