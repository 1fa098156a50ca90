"""The three losses on values worked out by hand."""
import math

import pytest
import torch

from acufarm_eval import losses
from acufarm_eval.points import PointTable, meridian_of


def test_soft_wing_hand_values():
    d = torch.tensor([0.0, 0.01, 0.09, -0.09, 1.0, 2.0])
    # ln(1 + d/0.01) below 1; ln(101) + (d - 1)/1.01 above
    want = [0.0, math.log(2.0), math.log(10.0), math.log(10.0), math.log(101.0), math.log(101.0) + 1 / 1.01]
    assert losses.soft_wing(d).tolist() == pytest.approx(want, abs=1e-6)


def test_soft_wing_is_continuous_at_theta():
    below = losses.soft_wing(torch.tensor([1.0 - 1e-6], dtype=torch.float64))
    above = losses.soft_wing(torch.tensor([1.0 + 1e-6], dtype=torch.float64))
    assert float(above - below) == pytest.approx(0.0, abs=1e-5)


def test_visibility_rmse_hand_values():
    assert float(losses.visibility_rmse(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]))) == pytest.approx(0.5, abs=1e-6)
    # sigmoid(ln 3) = 0.75: errors 0.25 and 0.5 -> sqrt((0.0625 + 0.25) / 2)
    got = losses.visibility_rmse(torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([[1.0, 1.0]]))
    assert float(got) == pytest.approx(math.sqrt(0.15625), abs=1e-6)


def test_coordinate_loss_counts_visible_points_only():
    pred = torch.tensor([[[0.59, 0.30], [5.0, 5.0]]])
    target = torch.tensor([[[0.50, 0.30], [0.0, 0.0]]])
    visible = torch.tensor([[1.0, 0.0]])
    # one visible point: x off by 0.09 -> ln 10, y exact -> 0; mean over its two axes
    assert float(losses.coordinate_loss(pred, target, visible)) == pytest.approx(math.log(10.0) / 2, abs=1e-6)


NAMES = ["LI1_a_left", "ST1_b", "LI2_c", "EX-HN1_d", "EX-B2_e", "DU1_f"]


def test_meridians_and_classification_targets():
    assert [meridian_of(n) for n in NAMES] == ["LI", "ST", "LI", "EX", "EX", "DU"]
    t = PointTable.from_names(NAMES)
    assert t.groups == ("LI", "ST", "EX", "DU")
    assert t.members == ((0, 2), (1,), (3, 4), (5,))
    assert t.local.tolist() == [0, 0, 1, 0, 1, 0]
    assert [x.tolist() for x in losses.classification_targets(t)] == [[0, 1], [0], [0, 1], [0]]


def test_classification_loss_hand_values():
    t = PointTable.from_names(NAMES)
    logits = [torch.zeros(1, len(m), len(m)) for m in t.members]
    # LI point 2 (local 1) is sure and right; everything else uniform
    logits[0][0, 1] = torch.tensor([0.0, 20.0])
    visible = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0, 0.0]])
    # visible: LI0 (ln 2), ST1 (k = 1: 0), LI2 (~0), EX3 (ln 2) -> 2 ln 2 / 4 visible points
    got = losses.classification_loss(logits, visible, t)
    assert float(got) == pytest.approx(2 * math.log(2.0) / 4, abs=1e-6)
    correct, counted = losses.classification_correct(logits, visible, t)
    assert counted == 4.0 and correct >= 2.0  # ST's single class and the sure LI point are right


def test_labels_parse_and_refuse():
    t = PointTable.from_names(NAMES)
    vis, xy = t.parse_label('{"label":[{"name":"ST1_b","coordinate":{"x":0.25,"y":0.75,"n":-0.5,"h":0.8}}]}', "x.json")
    assert vis.tolist() == [0, 1, 0, 0, 0, 0] and xy[1].tolist() == [0.25, 0.75]
    with pytest.raises(ValueError, match="not in map.txt"):
        t.parse_label('{"label":[{"name":"GV20","coordinate":{"x":0.2,"y":0.2}}]}', "x.json")
    with pytest.raises(ValueError, match="twice"):
        t.parse_label('{"label":[{"name":"DU1_f","coordinate":{"x":0.2,"y":0.2}},{"name":"DU1_f","coordinate":{"x":0.2,"y":0.2}}]}', "x.json")
    with pytest.raises(ValueError, match="not JSON"):
        t.parse_label("{", "x.json")
    with pytest.raises(ValueError, match="not a normalised image coordinate"):
        t.parse_label('{"label":[{"name":"DU1_f","coordinate":{"x":1e40,"y":0.2}}]}', "x.json")
    with pytest.raises(ValueError, match="no numeric coordinate"):
        t.parse_label('{"label":[{"name":"DU1_f","coordinate":{"x":true,"y":0.2}}]}', "x.json")
