"""The committed schedules.json is exactly what make_schedules.py writes (so nobody edits it by hand)."""
import json
import pathlib
import runpy
import shutil


def test_vectors_are_regenerated_identically(tmp_path):
    here = pathlib.Path(__file__).parent
    shutil.copy(here / "make_schedules.py", tmp_path / "make_schedules.py")
    runpy.run_path(str(tmp_path / "make_schedules.py"), run_name="__main__")
    fresh = json.loads((tmp_path / "schedules.json").read_text())
    committed = json.loads((here / "schedules.json").read_text())
    assert fresh == committed
