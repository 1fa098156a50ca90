"""The committed MediaPipe ONNX models are the ones convert.py wrote, and load with the IO the drift
check relies on."""

import hashlib
import pathlib

import numpy as np
import onnxruntime as ort

FACEMESH = pathlib.Path(__file__).resolve().parents[1] / "facemesh"
IO = {
    "face_detection_short_range.onnx": ([1, 128, 128, 3], {"regressors": [1, 896, 16], "classificators": [1, 896, 1]}),
    "face_landmark.onnx": ([1, 192, 192, 3], {"conv2d_21": [1, 1, 1, 1404], "conv2d_31": [1, 1, 1, 1]}),
}


def test_models_match_their_recorded_sha256():
    sums = {}
    for line in (FACEMESH / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = digest
    for name in IO:
        assert hashlib.sha256((FACEMESH / name).read_bytes()).hexdigest() == sums[name], name


def test_models_run_with_the_expected_io():
    for name, (input_shape, outputs) in IO.items():
        session = ort.InferenceSession(str(FACEMESH / name), providers=["CPUExecutionProvider"])
        (feed,) = session.get_inputs()
        assert feed.shape == input_shape, name
        got = session.run(list(outputs), {feed.name: np.zeros(input_shape, np.float32)})
        for (output, shape), value in zip(outputs.items(), got):
            assert list(value.shape) == shape, (name, output)
            assert np.isfinite(value).all(), (name, output)
