"""The committed tokenizer.json against transformers' CLIPTokenizer and OpenAI's own BPE (via open_clip)."""

from __future__ import annotations

import json

import pytest
from acufarm_export.tokenizer import (
    build_clip_tokenizer,
    clip_vocab_and_merges,
    open_clip_bpe_path,
    write_tokenizer_json,
)
from conftest import TINY
from tokenizers import Tokenizer

PROMPTS = [
    "a photo of a cat",
    "A  Portrait of an ASTRONAUT, riding a horse -- 35mm, f/1.8!",
    "soft rim light from the left; warm tones (golden hour) & bokeh",
    "it's the person's 3rd try: don't blur the face…",
    "café naïve Ångström 東京 🙂",
    "<|startoftext|>hello<|endoftext|>",
]


@pytest.fixture(scope="module")
def committed() -> Tokenizer:
    return Tokenizer.from_file(str(TINY / "common" / "tokenizer.json"))


@pytest.fixture(scope="module")
def hf_reference(tmp_path_factory):
    """transformers' CLIPTokenizer loaded from vocab.json + merges.txt, the files of SD1.5's tokenizer/ folder."""
    from transformers import CLIPTokenizer

    folder = tmp_path_factory.mktemp("sd15_tokenizer")
    vocab, merges = clip_vocab_and_merges(open_clip_bpe_path())
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return CLIPTokenizer.from_pretrained(folder)


def test_known_ids(committed):
    assert committed.get_vocab_size() == 49408
    assert committed.encode("a photo of a cat").ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (committed.token_to_id("<|startoftext|>"), committed.token_to_id("<|endoftext|>")) == (49406, 49407)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_matches_transformers_clip_tokenizer(committed, hf_reference, prompt):
    assert committed.encode(prompt).ids == hf_reference(prompt)["input_ids"]


@pytest.mark.parametrize("prompt", PROMPTS[:5])
def test_matches_openai_simple_tokenizer(committed, prompt):
    """open_clip's SimpleTokenizer is OpenAI's pure-Python BPE: an implementation independent of ``tokenizers``."""
    from open_clip.tokenizer import SimpleTokenizer

    assert committed.encode(prompt).ids == [49406, *SimpleTokenizer().encode(prompt), 49407]


def test_committed_file_is_current(tmp_path):
    write_tokenizer_json(build_clip_tokenizer(), tmp_path / "tokenizer.json")
    assert (tmp_path / "tokenizer.json").read_bytes() == (TINY / "common" / "tokenizer.json").read_bytes()
