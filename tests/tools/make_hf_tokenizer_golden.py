# Writes the two small tokenizer.json files under tests/golden/hf_tokenizer/ (hand-chosen vocab,
# merges and scores; no training). Run from the repository root: python3 tests/tools/make_hf_tokenizer_golden.py
import json

def bytes_to_unicode():  # GPT-2's table
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}

B = bytes_to_unicode()
QWEN2 = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"

# ---- byte-level BPE, Qwen2-style: ids 0..255 are the byte symbols, merges give 256.. ----
vocab = {B[b]: b for b in range(256)}
merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"),
          ("æ", "Ĺ"), ("æĹ", "¥"),            # 日 = E6 97 A5
          ("æ", "ľ"), ("æľ", "¬"),            # 本 = E6 9C AC
          ("æĹ¥", "æľ¬"),                      # 日本
          ("ã", "ģ"), ("ãģ", "®"),            # の = E3 81 AE
          ("Ġ", "Ġ"), ("Ċ", "Ċ"), ("l", "l"), ("o", "r"), ("Ġ", "w"), ("Ġw", "or"),
          ("H", "e"), ("He", "ll"), ("Hell", "o")]
for a, b in merges:
    vocab[a + b] = len(vocab)
n = len(vocab)
added = [(n, "<|endoftext|>", True, False, False), (n + 1, "<|im_start|>", True, False, False),
         (n + 2, "<|im_end|>", True, False, False), (n + 3, "<tool>", False, False, False),
         (n + 4, "<mask>", True, True, False)]
def added_json(lst):
    return [{"id": i, "content": c, "single_word": False, "lstrip": l, "rstrip": r, "normalized": False,
             "special": s} for i, c, s, l, r in lst]
bpe = {
    "version": "1.0", "truncation": None, "padding": None,
    "added_tokens": added_json(added),
    "normalizer": {"type": "NFC"},
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
    "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
    "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
    "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "",
              "end_of_word_suffix": "", "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
              "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
}
with open("tests/golden/hf_tokenizer/bpe_bytelevel/tokenizer.json", "w", encoding="utf-8") as f:
    json.dump(bpe, f, ensure_ascii=False, indent=1)

# ---- Unigram with Metaspace and byte fallback, llm-jp style ----
pieces = [("<unk>", 0.0), ("<s>", 0.0), ("</s>", 0.0)] + [("<0x%02X>" % b, 0.0) for b in range(256)]
pieces += [("▁", -2.0), ("▁the", -3.0), ("▁cat", -4.0), ("▁ca", -3.0), ("▁world", -4.5), ("▁wor", -3.0),
           ("ld", -1.0), ("▁日本", -2.5), ("日本", -3.0), ("日", -4.0), ("本", -4.0), ("語", -4.5), ("の", -3.0),
           ("は", -3.5)]
pieces += [(c, -5.0) for c in "thecawoldsinrHW"]
uni = {
    "version": "1.0", "truncation": None, "padding": None,
    "added_tokens": added_json([(0, "<unk>", True, False, False), (1, "<s>", True, False, False),
                                (2, "</s>", True, False, False)]),
    "normalizer": None,
    "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": True},
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                {"Sequence": {"id": "B", "type_id": 1}}],
                       "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
    "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"},
        {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "Unigram", "unk_id": 0, "vocab": [[p, s] for p, s in pieces], "byte_fallback": True},
}
with open("tests/golden/hf_tokenizer/unigram_metaspace/tokenizer.json", "w", encoding="utf-8") as f:
    json.dump(uni, f, ensure_ascii=False, indent=1)
