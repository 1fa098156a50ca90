"""Converts MediaPipe's face detector and face landmark models to ONNX for the drift check.

The two TFLite models ship inside the `mediapipe==0.10.21` wheel (Apache-2.0; later releases ship
no models). `tf2onnx` (with `tensorflow-cpu`) converts them; the script then runs both the TFLite
original and the ONNX copy on the same inputs and refuses to write anything when their outputs
differ by more than a float32 rounding margin. Outputs, next to this file:

  face_detection_short_range.onnx, face_landmark.onnx, SHA256SUMS, LICENSE.mediapipe

Run it from a throwaway environment (the project's test environment does not need TensorFlow):

  python3 -m venv /tmp/fm && /tmp/fm/bin/pip install "mediapipe==0.10.21" tensorflow-cpu tf2onnx onnxruntime==1.31.1
  /tmp/fm/bin/python models/facemesh/convert.py
"""

import argparse
import hashlib
import importlib.metadata
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

MEDIAPIPE_VERSION = "0.10.21"
# name → path inside the mediapipe package
MODELS = {
    "face_detection_short_range": "modules/face_detection/face_detection_short_range.tflite",
    "face_landmark": "modules/face_landmark/face_landmark.tflite",
}
OPSET = 17
# Largest difference allowed between TFLite and ONNX Runtime outputs, relative to the output's range.
TOLERANCE = 1e-4


def sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tflite_outputs(model: pathlib.Path, image: np.ndarray) -> list[np.ndarray]:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(model))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image)
    interpreter.invoke()
    details = sorted(interpreter.get_output_details(), key=lambda d: d["name"])
    return [interpreter.get_tensor(d["index"]) for d in details]


def onnx_outputs(model: pathlib.Path, image: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (feed,) = session.get_inputs()
    names = sorted(o.name for o in session.get_outputs())
    return session.run(names, {feed.name: image})


def check(name: str, tflite: pathlib.Path, onnx: pathlib.Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
    rng = np.random.default_rng(0)
    for trial in range(3):
        # MediaPipe feeds images scaled to [-1, 1] (detector) or [0, 1] (landmarks); cover both.
        image = rng.uniform(-1.0 if trial == 0 else 0.0, 1.0, size=shape).astype(np.float32)
        expected = tflite_outputs(tflite, image)
        got = onnx_outputs(onnx, image)
        if len(expected) != len(got):
            sys.exit(f"{name}: TFLite has {len(expected)} outputs, ONNX {len(got)}")
        for e, g in zip(expected, got):
            e, g = np.asarray(e, np.float64).reshape(-1), np.asarray(g, np.float64).reshape(-1)
            scale = max(1.0, float(np.abs(e).max()))
            worst = float(np.abs(e - g).max()) / scale
            if e.shape != g.shape or worst > TOLERANCE:
                sys.exit(f"{name}: ONNX output differs from TFLite (relative {worst:.2e} > {TOLERANCE}); not writing it")
        print(f"{name}: ONNX matches TFLite on input {trial} (inputs {shape})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path(__file__).resolve().parent)
    args = parser.parse_args()

    version = importlib.metadata.version("mediapipe")
    if version != MEDIAPIPE_VERSION:
        sys.exit(f"mediapipe {version} is installed; install mediapipe=={MEDIAPIPE_VERSION} (later releases ship no models)")
    import mediapipe

    package = pathlib.Path(mediapipe.__file__).parent
    args.out.mkdir(parents=True, exist_ok=True)
    sums = []
    with tempfile.TemporaryDirectory() as scratch:
        for name, rel in MODELS.items():
            tflite = package / rel
            if not tflite.exists():
                sys.exit(f"{tflite} is missing from the mediapipe wheel")
            onnx = pathlib.Path(scratch) / f"{name}.onnx"
            subprocess.run(
                [sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite), "--output", str(onnx), "--opset", str(OPSET)],
                check=True,
            )
            check(name, tflite, onnx)
            target = args.out / f"{name}.onnx"
            target.write_bytes(onnx.read_bytes())
            sums.append(f"{sha256(target)}  {target.name}")
            sums.append(f"{sha256(tflite)}  {rel} (source, mediapipe {MEDIAPIPE_VERSION})")
    (args.out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    licence = next(
        (f for f in importlib.metadata.distribution("mediapipe").files or [] if f.name.upper().startswith("LICENSE")),
        None,
    )
    if licence is None:
        sys.exit("the mediapipe wheel carries no LICENSE file to copy")
    text = pathlib.Path(licence.locate()).read_text()
    notice = (
        f"face_detection_short_range.onnx and face_landmark.onnx are converted (tf2onnx, opset {OPSET})\n"
        f"from the TFLite models in the mediapipe=={MEDIAPIPE_VERSION} wheel, Copyright Google LLC,\n"
        "licensed under the Apache License, Version 2.0, reproduced below. Weights are unchanged.\n\n"
    )
    (args.out / "LICENSE.mediapipe").write_text(notice + text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
