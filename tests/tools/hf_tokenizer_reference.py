# Reference ids for tests/core/test_hf_tokenizer.cpp from the Hugging Face `tokenizers` library
# (not installed on the build machine; the GPU machines have it). Prints, per golden folder and
# text, the ids with and without special tokens and the decode; the C++ test's expectations must
# equal these. Run from the repository root: python3 tests/tools/hf_tokenizer_reference.py
import json
from tokenizers import Regex, Tokenizer, pre_tokenizers

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

# ---- pre-tokenizer splits, variants and longer texts (HfTokenizerPreTokenizer, *Variant, *Library tests) ----
Q=r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
L3=Q.replace(r"\p{N}|",r"\p{N}{1,3}|")
G=r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
for name,pat,texts in [("Qwen2",Q,["a  b","x \n\n y","IT'S","!!\n\nx","。日本","12345","カタカナとひらがな、漢字"]),("Llama3",L3,["12345"]),("Gpt2",G,["IT'S","it's 2024年","x \n\n y","。日本","Hi 😀!  "])]:
    s=pre_tokenizers.Split(Regex(pat),"isolated")
    for t in texts: print(name, json.dumps(t,ensure_ascii=False), json.dumps([p for p,_ in s.pre_tokenize_str(t)],ensure_ascii=False))
j=json.load(open("tests/golden/hf_tokenizer/bpe_bytelevel/tokenizer.json"))
j["normalizer"]=None
j["pre_tokenizer"]={"type":"ByteLevel","add_prefix_space":False,"trim_offsets":True,"use_regex":True}
t=Tokenizer.from_str(json.dumps(j))
for x in ["Hello world","in the","2024","x \n\n y 日本"]: print("gpt2", json.dumps(x,ensure_ascii=False), t.encode(x,add_special_tokens=False).ids, json.dumps(t.decode(t.encode(x,add_special_tokens=False).ids),ensure_ascii=False))
j["pre_tokenizer"]["add_prefix_space"]=True
print("prefix", Tokenizer.from_str(json.dumps(j)).encode("the",add_special_tokens=False).ids)
b=Tokenizer.from_file("tests/golden/hf_tokenizer/bpe_bytelevel/tokenizer.json")
for ids in [[72,240,159],[240,159,72]]: print("lossy", ids, json.dumps(b.decode(ids)))
print("nfc", b.encode("cafe\u0301",add_special_tokens=False).ids)
for x in ["日本の日本語です。", "a  b\n\n\tc   ", "  leading", "Hi 😀!🎉", "mixed ASCII と 日本語 123 and emoji 👍🏽", " ", "\r\n"]:
    print("bpe", json.dumps(x,ensure_ascii=False), b.encode(x,add_special_tokens=False).ids)
u=json.load(open("tests/golden/hf_tokenizer/unigram_metaspace/tokenizer.json"))
u["pre_tokenizer"]["prepend_scheme"]="always"
print("always", Tokenizer.from_str(json.dumps(u)).encode("the</s>the",add_special_tokens=False).ids)
u["model"]["byte_fallback"]=False
u["decoder"]={"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":True}
tu=Tokenizer.from_str(json.dumps(u))
print("nobf", tu.encode("日本😀🎉",add_special_tokens=False).ids, json.dumps(tu.decode([260,261])))
uu=Tokenizer.from_file("tests/golden/hf_tokenizer/unigram_metaspace/tokenizer.json")
print("uni", uu.encode("日本の猫は😀です").ids, json.dumps(uu.decode([260,2,273,274,275])))

# ---- Llama-2-style BPE with byte fallback (llamaStyleJson() in the C++ test) ----
lv = {"<unk>": 0, "<s>": 1, "</s>": 2}
for b in range(256):
    lv["<0x%02X>" % b] = 3 + b
for i, t in enumerate(["▁", "t", "h", "e", "▁t", "he", "▁the", "日", "本", "日本"]):
    lv[t] = 259 + i
llama = {
    "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])],
    "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
    "pre_tokenizer": None,
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
    "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
    "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
              "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "vocab": lv,
              "merges": ["▁ t", "h e", "▁t he", "日 本"]},
}
lt = Tokenizer.from_str(json.dumps(llama))
e = lt.encode("the 日本😀").ids
print("llama", lt.encode("the 日本😀", add_special_tokens=False).ids, e, json.dumps(lt.decode(e), ensure_ascii=False),
      json.dumps(lt.decode(e, skip_special_tokens=False), ensure_ascii=False),
      lt.encode("the</s>the", add_special_tokens=False).ids)
