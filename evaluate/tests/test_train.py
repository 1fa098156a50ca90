"""A short resnet18 training on the generated set (real AcuSim labels, 6 models): every loss
falls, the fit beats predicting the mean position, the same seed gives the same numbers, and an
interrupted run resumes to the same result."""
import json

import pytest
import torch

from acufarm_eval import run as runner
from acufarm_eval import train

from conftest import config, write_index

# The seed's learning rate; 30 epochs of 24 training images in batches of 4 (180 steps).
LEARN = dict(epochs=30, image_size=64, batch_size=4, learning_rate=5e-5)
SHORT = dict(epochs=3, image_size=32, batch_size=8, learning_rate=1e-3)


TIMINGS = {"samples_per_s", "train_seconds", "seconds", "images_per_s"}


def numbers(doc):
    """The arms' results without the wall-clock measurements."""
    if isinstance(doc, dict):
        return {k: numbers(v) for k, v in doc.items() if k not in TIMINGS}
    if isinstance(doc, list):
        return [numbers(v) for v in doc]
    return doc


def evaluate(tmp_path, dataset, name, **cfg):
    root, written = dataset
    index = write_index(tmp_path / f"{name}.json", written, config(**cfg), root / "original", root / "augmented")
    return runner.run(index, tmp_path / name)


@pytest.fixture(scope="module")
def learned(tmp_path_factory, dataset):
    tmp = tmp_path_factory.mktemp("learn")
    return tmp, evaluate(tmp, dataset, "a", **LEARN)


def test_every_loss_falls_and_the_fit_beats_the_mean_position(learned):
    _, doc = learned
    arm = doc["arms"]["original"]
    first, last = arm["curves"][0]["train"], arm["curves"][-1]["train"]
    for loss in ("vis_rmse", "cls_ce", "coord_softwing"):
        assert last[loss] < 0.8 * first[loss], (loss, first[loss], last[loss])
    fit = arm["train_fit"]["coord_error_mean_px"]
    mean_position = doc["baseline_mean_position"]["train_fit"]["coord_error_mean_px"]
    assert fit < 0.65 * mean_position, (fit, mean_position)
    assert arm["train_fit"]["vis_accuracy"] > doc["baseline_mean_position"]["train_fit"]["vis_accuracy"] - 1e-9


@pytest.fixture(scope="module")
def short(tmp_path_factory, dataset):
    tmp = tmp_path_factory.mktemp("short")
    return tmp, evaluate(tmp, dataset, "a", **SHORT)


def test_same_seed_same_split_and_bit_identical_metrics(short, tmp_path, dataset):
    tmp, doc = short
    again = evaluate(tmp_path, dataset, "b", **SHORT)
    assert again["splits"] == doc["splits"]
    assert json.dumps(numbers(again["arms"]), sort_keys=True) == json.dumps(numbers(doc["arms"]), sort_keys=True)
    a = torch.load(tmp / "a" / "best-original.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "best-original.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_interrupted_run_resumes_to_the_same_result(short, tmp_path, dataset, monkeypatch):
    _, doc = short
    calls = []
    real = train.Meter.progress

    def stop_after_two(self, unit, epoch, epochs):
        real(self, unit, epoch, epochs)
        calls.append(epoch)
        if len(calls) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train.Meter, "progress", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        evaluate(tmp_path, dataset, "c", **SHORT)
    monkeypatch.setattr(train.Meter, "progress", real)
    saved = torch.load(tmp_path / "c" / "checkpoints" / "f0-s0-original" / "last.pt", weights_only=False)
    assert saved["state"]["epoch"] == 2
    resumed = evaluate(tmp_path, dataset, "c", **SHORT)
    assert json.dumps(numbers(resumed["arms"]), sort_keys=True) == json.dumps(numbers(doc["arms"]), sort_keys=True)


def test_changed_settings_do_not_resume_silently(tmp_path, dataset):
    evaluate(tmp_path, dataset, "d", epochs=1)
    (tmp_path / "d" / "checkpoints" / "f0-s0-original" / "result.json").unlink()
    with pytest.raises(train.ResumeError, match="other settings"):
        evaluate(tmp_path, dataset, "d", epochs=1, learning_rate=2e-3)
    # a finished training is not overwritten either
    evaluate(tmp_path, dataset, "e", epochs=1)
    with pytest.raises(train.ResumeError, match="other settings"):
        evaluate(tmp_path, dataset, "e", epochs=1, weight_decay=1e-4)
    # settings that change no number (threads, loader processes, bootstrap) resume
    evaluate(tmp_path, dataset, "e", epochs=1, threads=1, loader_workers=1, bootstrap=100)


def test_pretrained_weights_are_loaded_and_wrong_ones_refused(tmp_path, dataset):
    import torchvision

    from acufarm_eval.model import AcupointNet, WeightsError
    from acufarm_eval.synth import table

    torch.manual_seed(3)
    net = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(net.state_dict(), path)
    model = AcupointNet(table(), "resnet18", str(path))
    assert torch.equal(model.backbone.conv1.weight, net.conv1.weight)
    doc = evaluate(tmp_path, dataset, "w", epochs=1, weights=str(path))
    assert doc["initialisation"] == "pretrained" and doc["config"]["weights"] == str(path)
    other = tmp_path / "densenet.pth"
    torch.save({"features.conv0.weight": torch.zeros(1)}, other)
    with pytest.raises(WeightsError, match="does not fit resnet18"):
        AcupointNet(table(), "resnet18", str(other))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot load"):
        AcupointNet(table(), "resnet18", str(tmp_path / "junk.pth"))
