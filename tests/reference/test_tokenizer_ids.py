"""The committed tokenizer fixture is what transformers' slow CLIPTokenizer (no ftfy) gives today, and the
committed tokenizer.json is OpenAI CLIP's own BPE vocabulary (the one SD1.5's text encoder was trained with).

The Rust side (worker/tests/tokenizer.rs) checks acufarm's tokenizer against the same fixture."""
import gzip
import importlib.util
import json
import os
import pathlib
import subprocess

import pytest

HERE = pathlib.Path(__file__).resolve().parent
TOKENIZER_JSON = HERE.parent.parent / "models" / "tiny" / "common" / "tokenizer.json"
VENV = pathlib.Path(os.environ.get("ACUFARM_HOME", pathlib.Path.home() / ".cache" / "acufarm")) / "clip-tokenizer"


def test_fixture_is_regenerated_identically(tmp_path):
    python = VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: the tokenizer reference needs transformers 4.x without ftfy; run scripts/setup.sh dev")
    fresh = tmp_path / "tokenizer_ids.json"
    done = subprocess.run([str(python), str(HERE / "make_tokenizer_ids.py"), str(fresh)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    committed = json.loads((HERE / "tokenizer_ids.json").read_text(encoding="utf-8"))
    regenerated = json.loads(fresh.read_text(encoding="utf-8"))
    assert regenerated["reference"] == committed["reference"]
    for new, old in zip(regenerated["rows"], committed["rows"], strict=True):
        assert new == old, f"row `{old['name']}` drifted; rerun make_tokenizer_ids.py and check the Rust tokenizer against it"
    assert regenerated == committed


def openai_clip_vocabulary():
    """CLIP's vocabulary built the way OpenAI's simple_tokenizer.py builds it from its BPE file (open_clip ships the file)."""
    spec = importlib.util.find_spec("open_clip")
    assert spec is not None, "open_clip is part of scripts/requirements-dev.txt; run scripts/setup.sh dev"
    bpe = pathlib.Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    extra = 256 - len(printable)
    # OpenAI orders the byte symbols printable first, then the remapped ones.
    symbols = [chr(b) for b in printable] + [chr(256 + i) for i in range(extra)]
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(vocab)}, merges


def test_committed_vocabulary_is_openai_clip():
    vocab, merges = openai_clip_vocabulary()
    model = json.loads(TOKENIZER_JSON.read_text(encoding="utf-8"))["model"]
    assert len(model["vocab"]) == 49408 and model["vocab"] == vocab
    assert [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]] == merges
