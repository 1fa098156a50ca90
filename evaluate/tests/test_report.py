"""Three arms in one run: the report holds all three with their intervals, and every number in
evaluation.md is the one in evaluation.json."""
import json
import re

import pytest

from acufarm_eval import metrics
from acufarm_eval import run as runner

from conftest import config, write_index

NUMBER = r"(–|-?\d+\.\d+)"


@pytest.fixture(scope="module")
def three_arms(tmp_path_factory, dataset):
    tmp = tmp_path_factory.mktemp("arms")
    root, written = dataset
    cfg = config(arms=["original", "augmented", "both"], seeds=2, epochs=2)
    index = write_index(tmp / "index.json", written, cfg, root / "original", root / "augmented")
    runner.run(index, tmp / "out")
    return tmp / "out"


def cell(text):
    m = re.fullmatch(NUMBER + r"(?: \[" + NUMBER + ", " + NUMBER + r"\])?(?: \((.*)\))?", text.strip())
    assert m, text
    nums = [None if g in (None, "–") else float(g) for g in m.groups()[:3]]
    return nums, m.group(4)


def close(shown, value, metric):
    if value is None:
        return shown is None
    step = 0.005 if metric.endswith("_px") else 0.00005
    return abs(shown - value) <= step + 1e-12


def tables(md):
    """{section title: [table…]} with table = [header cells, row cells…] under each `## ` heading."""
    out, title, previous = {}, None, ""
    for line in md.splitlines():
        if line.startswith("## "):
            title = line[3:]
            out[title] = []
        elif line.startswith("|") and title:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not previous.startswith("|"):
                out[title].append([cells])
            else:
                out[title][-1].append(cells)
        previous = line
    return {k: [[r for r in t if not r[0].startswith("---")] for t in v] for k, v in out.items()}


def test_report_numbers_are_the_json_numbers(three_arms):
    doc = json.loads((three_arms / "evaluation.json").read_text(encoding="utf-8"))
    md = (three_arms / "evaluation.md").read_text(encoding="utf-8")
    assert set(doc["arms"]) == {"original", "augmented", "both"}
    found = tables(md)
    names = [m for m, _, _ in metrics.METRICS]
    for stage, title in (("equal_epochs", "At equal epochs"), ("equal_steps", "At equal optimizer steps")):
        arms_table, diff_table = next(v for k, v in found.items() if k.startswith(title))
        assert arms_table[0][0] == "arm" and diff_table[0][0] == "arm − original"
        arm_rows = {r[0]: r[1:] for r in arms_table[1:] if r[0] in doc["arms"]}
        assert set(arm_rows) == set(doc["arms"])
        for arm, cells in arm_rows.items():
            entry = doc["arms"][arm][stage]
            for metric, text in zip(names, cells):
                (value, lo, hi), _ = cell(text)
                assert close(value, entry[metric], metric), (stage, arm, metric, text)
                assert lo is not None and close(lo, entry["ci95"][metric][0], metric) and close(hi, entry["ci95"][metric][1], metric)
                assert lo <= entry[metric] + 1e-9 or metric == "vis_rmse"  # an interval holds its estimate (RMSE's is of a ratio's root)
        diff_rows = {r[0]: r[1:] for r in diff_table[1:]}
        assert set(diff_rows) == {"augmented", "both"}
        for arm, cells in diff_rows.items():
            for metric, text in zip(names, cells):
                (value, lo, hi), verdict = cell(text)
                d = doc["comparisons"][stage][arm][metric]
                assert close(value, d["difference"], metric) and close(lo, d["ci95"][0], metric) and close(hi, d["ci95"][1], metric)
                assert verdict == d["verdict"]
                base = doc["baseline_mean_position"]["test"].get(metric)
                if base is not None:
                    lower = dict((m, b) for m, _, b in metrics.METRICS)[metric] == "lower"
                    learned = all((doc["arms"][x][stage][metric] < base) if lower else (doc["arms"][x][stage][metric] > base) for x in (arm, "original"))
                    assert learned or verdict.startswith("no verdict"), (arm, metric, verdict)
    per_model = found["Per test model (coordinate error, mean px, equal epochs)"][0][1:]
    assert [r[0] for r in per_model] == doc["test_models"]
    for r in per_model:
        for arm, text in zip(["original", "augmented", "both"], r[1:]):
            assert close(float(text), doc["arms"][arm]["per_model"][r[0]]["coord_error_mean_px"], "_px")


def test_both_arm_sees_twice_the_steps_and_equal_step_choice_respects_the_budget(three_arms):
    doc = json.loads((three_arms / "evaluation.json").read_text(encoding="utf-8"))
    units = {a: doc["arms"][a]["units"] for a in doc["arms"]}
    assert units["both"][0]["steps_per_epoch"] >= 2 * units["original"][0]["steps_per_epoch"] - 1
    for a, us in units.items():
        for u in us:
            assert u["best_steps"]["steps"] <= u["step_budget"] and not u["best_steps"]["over_budget"]
    assert len(units["original"]) == 2  # two seeds


def test_plots_and_checkpoints_are_written(three_arms):
    for name in ("loss_curves.png", "loss_curves_steps.png", "per_point_error.png", "best-original.pt", "best-augmented.pt", "best-both.pt"):
        assert (three_arms / name).stat().st_size > 1000, name
