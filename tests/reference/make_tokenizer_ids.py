"""Writes tokenizer_ids.json: transformers' ids for a table of awkward prompts, the reference that
acufarm's CLIP tokenizer (worker/src/pipeline/tokenizer.rs) must equal on every row.

The reference is transformers' slow, pure-Python CLIPTokenizer (transformers 4.57.6: transformers 5
removed it) run WITHOUT ftfy, which is how ComfyUI and diffusers tokenize SD1.5 prompts by default:
without ftfy, CLIPTokenizer cleans text with its BasicTokenizer (control characters dropped, CJK
ideographs spaced, NFC, lower-cased words) instead of ftfy.fix_text. This script refuses to run
where ftfy is importable, so the fixture can never silently come from the other path.

Run it with the tokenizer venv that scripts/setup.sh dev makes:
    $ACUFARM_HOME/clip-tokenizer/bin/python tests/reference/make_tokenizer_ids.py [OUT.json]
The vocabulary is the committed models/tiny/common/tokenizer.json, written out as the vocab.json and
merges.txt the slow tokenizer reads, with SD1.5's tokenizer_config.json (as ComfyUI ships it in
comfy/sd1_tokenizer/). Calls are diffusers': tokenizer(prompt, padding="max_length", max_length=77,
truncation=True).
"""
import importlib.util
import json
import pathlib
import platform
import sys
import tempfile
import unicodedata

HERE = pathlib.Path(__file__).resolve().parent
TOKENIZER_JSON = HERE.parent.parent / "models" / "tiny" / "common" / "tokenizer.json"
CONTEXT = 77

# (name, prompt): each row exercises one step of the cleaning or of the BPE.
PROMPTS = [
    ("plain", "a photo of a cat"),
    ("empty", ""),
    ("only spaces", "   "),
    ("weights and commas", "masterpiece, best quality, (photorealistic:1.2), 1girl, [blurry], {detailed}"),
    ("nfc accents", "café naïve résumé Ångström"),
    ("nfd accents", "cafe\u0301 nai\u0308ve re\u0301sume\u0301 A\u030angstro\u0308m"),
    ("nfd vietnamese", "Tie\u0302\u0301ng Vie\u0323\u0302t"),
    ("mark reordering", "q\u0307\u0323 a\u0301\u0327"),
    ("nfd hangul", "\u1112\u1161\u11ab\u1100\u1173\u11af \ud55c\uae00"),
    ("cjk", "一只猫在草地上"),
    ("cjk mixed", "photo of 東京タワー at night, 猫の写真"),
    ("cjk compatibility", "\uf900\uf901 \U0002f800"),
    ("cjk extension b", "\U00020000\U0002a6d6x"),
    ("kana and hangul", "カメラ ひらがな 한국어 사진"),
    ("emoji", "a cat 🐱 wearing 🎩, 👍🏽 and 🇯🇵"),
    ("emoji zwj sequence", "family 👩\u200d👩\u200d👧 and ❤\ufe0f"),
    ("runs of spaces", "a    photo   of  a     cat"),
    ("nbsp and unicode spaces", "a\u00a0\u00a0photo\u2003of\u3000a\u202fcat\u2009"),
    ("tabs and newlines", "line one\n\tline two\r\nline three\n\n"),
    ("line and paragraph separators", "one\u2028two\u2029three"),
    ("ascii control characters", "a\x00b\x07c\x1bd\x7fe\x0bf\x0cg\x1ch\x85i"),
    ("format characters", "zero\u200bwidth\u200djoin\u200cnon\ufeffbom co\u00adoperate \u2066iso\u2069"),
    ("replacement and private use", "bad\ufffdbyte \ue000private \U000f0000plane"),
    ("unassigned code point", "a\u0378b"),
    ("punctuation", "hello!!! what?? (yes) [no] {maybe} <tag> @user #tag $100 50% a&b c*d ~e^f_g `x` a/b\\c|d"),
    ("unicode punctuation", "“quoted” ‘single’ — dash… «guillemets» ¿qué? ¡sí!"),
    ("apostrophes", "don't it's we're I've I'm you'll he'd"),
    ("apostrophes upper case", "DON'T IT'S WE'RE I'VE"),
    ("apostrophes odd", "don’t rock 'n' roll 's't're'll ''quoted''"),
    ("long s after apostrophe", "'ſ 'ſtartoftext <|ſtartoftext|>"),
    ("marks that fold to letters", "b\u0345c \u0345 xⅠy aⒶb 'K"),
    ("numbers", "1990s 3.14 1,000,000 ½ ² ٣٤ ①"),
    ("fullwidth", "ＡＢＣ１２３！"),
    ("case mapping", "İstanbul ΑΣ ΑΣ. ΌΣΟΣ ß ẞ ǅ K"),
    ("scripts", "Привет мир مرحبا שלום नमस्ते ไทยภาษา"),
    ("url", "https://example.com/a?b=c&d=e#f"),
    ("long words", "supercalifragilisticexpialidocious aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    ("special tokens", "<|startoftext|>hello<|endoftext|>world"),
    ("special token after punctuation", "!<|endoftext|>x"),
    ("special token upper case", "!<|ENDOFTEXT|>"),
    ("special token formed by cleaning", "x<|endo\u200bftext|>y"),
    ("special tokens only", "<|endoftext|><|startoftext|>"),
    ("75 tokens", " ".join(["a"] * 75)),
    ("76 tokens", " ".join(["a"] * 76)),
    (
        "long prompt",
        "a highly detailed studio photograph of a young woman standing in soft window light, "
        "shallow depth of field, 85mm lens, natural skin texture, freckles, gentle smile, "
        "wearing a linen shirt, muted earth tones, film grain, kodak portra 400, rim light, "
        "bokeh background with green plants, award winning portrait, sharp focus on the eyes, "
        "subtle makeup, hair tied back, golden hour, warm color grading, 8k, ultra realistic",
    ),
]


def visible(text):
    """JSON text with every invisible or combining character escaped, so the fixture reads unambiguously."""
    def escape(c):
        if c == " " or unicodedata.category(c)[0] not in "CZM":
            return c
        return json.dumps(c, ensure_ascii=True)[1:-1]

    return "".join(escape(c) for c in text)


def fail(message):
    sys.exit(f"make_tokenizer_ids.py: {message}")


def load_tokenizer(folder):
    """CLIPTokenizer (slow) over the committed vocabulary, configured as SD1.5 ships it."""
    if importlib.util.find_spec("ftfy") is not None:
        fail("ftfy is importable here, so CLIPTokenizer would use ftfy.fix_text instead of the BasicTokenizer path "
             "ComfyUI and diffusers use by default; run this with $ACUFARM_HOME/clip-tokenizer/bin/python (scripts/setup.sh dev)")
    import transformers
    from transformers import CLIPTokenizer

    if not transformers.__version__.startswith("4."):
        fail(f"transformers {transformers.__version__} has no slow CLIPTokenizer; use the 4.x in $ACUFARM_HOME/clip-tokenizer")
    model = json.loads(TOKENIZER_JSON.read_text(encoding="utf-8"))["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"], ensure_ascii=False), encoding="utf-8")
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    added = lambda content: {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}
    config = {
        "add_prefix_space": False,
        "bos_token": added("<|startoftext|>"),
        "do_lower_case": True,
        "eos_token": added("<|endoftext|>"),
        "errors": "replace",
        "model_max_length": CONTEXT,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": added("<|endoftext|>"),
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder))
    if tokenizer.fix_text is not None:
        fail("CLIPTokenizer picked up ftfy; the reference must be the BasicTokenizer path")
    return tokenizer, transformers.__version__


def main():
    out = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "tokenizer_ids.json"
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, version = load_tokenizer(pathlib.Path(tmp))
        rows = []
        for name, prompt in PROMPTS:
            tokens = tokenizer(prompt, add_special_tokens=False).input_ids
            ids = tokenizer(prompt, padding="max_length", max_length=CONTEXT, truncation=True).input_ids
            rows.append({"name": name, "prompt": prompt, "tokens": tokens, "ids": ids})
    names = [name for name, _ in PROMPTS]
    assert len(set(names)) == len(names), "row names must be unique"
    header = {
        "generator": "tests/reference/make_tokenizer_ids.py",
        "reference": f"transformers {version} CLIPTokenizer (slow, no ftfy)",
        "python": platform.python_version(),
        "unicode": unicodedata.unidata_version,
        "context": CONTEXT,
    }
    # One row per line, so a change shows up as one line in a diff.
    lines = [visible(json.dumps(row, ensure_ascii=False)) for row in rows]
    text = "{\n" + "".join(f" {json.dumps(k)}: {json.dumps(v)},\n" for k, v in header.items())
    text += ' "rows": [\n  ' + ",\n  ".join(lines) + "\n ]\n}\n"
    out.write_text(text, encoding="utf-8")
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
