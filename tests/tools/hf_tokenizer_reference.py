# Reference ids for tests/core/test_hf_tokenizer.cpp from the Hugging Face `tokenizers` library
# (not installed on the build machine; the GPU machines have it). Prints, per golden folder and
# text, the ids with and without special tokens and the decode; the C++ test's expectations must
# equal these. Run from the repository root: python3 tests/tools/hf_tokenizer_reference.py
import json
from tokenizers import Tokenizer

CASES = {
    "bpe_bytelevel": [
        "the", "in the", "Hello world", "日本の", "日本語", "a  b", "a\n\nb", "hi   ", "it's", "IT'S",
        "2024年", "Hi 😀!", "。日本", "<|im_start|>user\nHi<|im_end|>", "a <mask>", "x<tool>y",
    ],
    "unigram_metaspace": [
        "the cat", "world", "日本語", "日本😀", "the</s>the", "the  cat",
    ],
}

for folder, texts in CASES.items():
    tok = Tokenizer.from_file(f"tests/golden/hf_tokenizer/{folder}/tokenizer.json")
    for text in texts:
        enc = tok.encode(text, add_special_tokens=False)
        with_special = tok.encode(text, add_special_tokens=True).ids
        print(json.dumps({"folder": folder, "text": text, "ids": enc.ids, "with_special": with_special,
                          "decode": tok.decode(enc.ids, skip_special_tokens=True),
                          "decode_keep": tok.decode(with_special, skip_special_tokens=False)},
                         ensure_ascii=False))
