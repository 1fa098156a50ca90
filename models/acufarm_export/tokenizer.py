"""CLIP BPE tokenizer as a Hugging Face ``tokenizer.json``.

SD1.5 uses OpenAI's CLIP tokenizer (openai/clip-vit-large-patch14): 49408 ids, ``<|startoftext|>``
= 49406, ``<|endoftext|>`` = 49407. With no model hub at hand, the vocabulary is rebuilt from the BPE
merge list that open_clip ships (``bpe_simple_vocab_16e6.txt.gz``, the same file OpenAI's
``SimpleTokenizer`` reads), exactly the way ``SimpleTokenizer`` builds it, and handed to transformers'
``CLIPTokenizerFast`` so the saved JSON carries the same normaliser, pre-tokeniser and post-processor
as SD1.5's tokenizer. The JSON does not pad or truncate: the worker pads to 77 with ``<|endoftext|>``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import tempfile
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
VOCAB_SIZE = 49408
# OpenAI's SimpleTokenizer keeps merge lines 1..48894 (49152 - 256 - 2 of them; line 0 is a header).
N_MERGES = 49152 - 256 - 2


def bytes_to_unicode() -> dict[int, str]:
    """OpenAI's reversible byte -> printable-character table (verbatim from CLIP's ``simple_tokenizer``)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def open_clip_bpe_path() -> Path:
    """Locate open_clip's bundled BPE file without importing open_clip (which pulls in torch and timm)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "open_clip is not installed; it ships the CLIP BPE merge list (bpe_simple_vocab_16e6.txt.gz)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the open_clip package")
    return path


def clip_vocab_and_merges(bpe_path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Build CLIP's vocab and merge list like ``SimpleTokenizer.__init__`` does."""
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE or vocab[BOS] != 49406 or vocab[EOS] != 49407:
        raise RuntimeError(f"{bpe_path}: rebuilt vocabulary has {len(vocab)} distinct ids, expected {VOCAB_SIZE}")
    return vocab, merges


def build_clip_tokenizer():
    """SD1.5's CLIP tokenizer (a transformers ``CLIPTokenizerFast``) from open_clip's BPE file."""
    from transformers import CLIPTokenizerFast

    vocab, merges = clip_vocab_and_merges(open_clip_bpe_path())
    with tempfile.TemporaryDirectory() as tmp:
        # The vocab.json / merges.txt pair is the format of SD1.5's tokenizer/ folder; loading through
        # files exercises the same conversion path as a real checkpoint.
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        merges_txt = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
        (Path(tmp) / "merges.txt").write_text(merges_txt, encoding="utf-8")
        tok = CLIPTokenizerFast.from_pretrained(tmp, model_max_length=77)
    check_clip_tokenizer(tok)
    return tok


def load_sd15_tokenizer(folder: Path):
    """The tokenizer of a diffusers SD1.5 folder (``tokenizer/`` with vocab.json + merges.txt or tokenizer.json)."""
    from transformers import CLIPTokenizerFast

    tok = CLIPTokenizerFast.from_pretrained(folder)
    check_clip_tokenizer(tok)
    return tok


def check_clip_tokenizer(tok) -> None:
    """Refuse anything that is not CLIP's 49408-id BPE (a wrong tokenizer would silently garble prompts)."""
    ids = tok("a photo of a cat")["input_ids"]
    expected = [49406, 320, 1125, 539, 320, 2368, 49407]
    if len(tok) != VOCAB_SIZE or ids != expected:
        raise RuntimeError(
            f"not the SD1.5 CLIP tokenizer: {len(tok)} ids, 'a photo of a cat' -> {ids}, expected {expected}"
        )


def write_tokenizer_json(tok, path: Path) -> None:
    """Write the backend ``tokenizers`` JSON (the only tokenizer file the worker reads)."""
    path.write_text(tok.backend_tokenizer.to_str(pretty=True) + "\n", encoding="utf-8")
