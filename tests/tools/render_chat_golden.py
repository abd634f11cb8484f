#!/usr/bin/python3
# Golden chat renderings for tests/core/test_chat_template.cpp: renders the real Jinja chat templates
# with python3-jinja2 in the environment Hugging Face transformers uses, and writes the expected
# strings (byte for byte) to tests/golden/chat_templates/expected.json. Must never be needed at test
# time: run it by hand when a template or a conversation changes, and commit its output.
#
#   /usr/bin/python3 tests/tools/render_chat_golden.py            # (Debian's python3-jinja2)
#
# The templates, tests/golden/chat_templates/<format>.jinja, are OUR TRANSCRIPTIONS of the published
# chat_template strings (the JSON-decoded text of tokenizer_config.json), written from the model
# repositories as faithfully as we could without network access:
#   gemma     google/gemma-2-2b-jpn-it, gemma-2-*-it (same template as Gemma 1 it)
#   llm-jp-3  llm-jp/llm-jp-3-3.7b-instruct (and the other llm-jp-3 instruct sizes)
#   llama2    meta-llama/Llama-2-7b-chat-hf (<<SYS>> folded into the first [INST])
#   llama3    meta-llama/Meta-Llama-3-8B-Instruct (3.0; not 3.1's tool/date template)
#   mistral   mistralai/Mistral-7B-Instruct-v0.2 as first published (no system role; the later
#             revision that prepends a system message is a different template)
#   chatml    Qwen/Qwen2-7B-Instruct (default system "You are a helpful assistant.")
#
# Gemma has no system role and its template raises on one. Following Gemma's own advice (put
# system instructions in the first user prompt), Kumihimo folds a leading system message into the
# first user turn: content = system + "\n\n" + user, and then renders with the real template, which
# trims that whole folded content. This tool does exactly that folding before calling Jinja, for the
# gemma format only, so the golden output pins the C++ renderer's folding too. A leading system
# message with no user turn right after it is left unfolded, so the real template raises.
import json
import os
import sys
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.normpath(os.path.join(HERE, "..", "golden", "chat_templates"))

# The special tokens transformers passes to the template (tokenizer.special_tokens_map) for each
# model; Qwen2 has no bos_token (its template never uses one).
FORMATS = {
    "gemma": {"bos": "<bos>", "eos": "<eos>"},
    "llm-jp-3": {"bos": "<s>", "eos": "</s>"},
    "llama2": {"bos": "<s>", "eos": "</s>"},
    "llama3": {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>"},
    "mistral": {"bos": "<s>", "eos": "</s>"},
    "chatml": {"bos": "", "eos": "<|im_end|>"},
}


def m(role, content):
    return {"role": role, "content": content}


# Each conversation is rendered with add_generation_prompt true and false, for every format.
CONVERSATIONS = [
    ("single_user", [m("user", "日本の首都はどこですか？")]),
    ("system_user", [m("system", "あなたは親切なアシスタントです。簡潔に答えてください。"),
                     m("user", "自然言語処理とは何か")]),
    ("multi_turn", [m("user", "Hello! Who are you?"),
                    m("assistant", "I am a small test model."),
                    m("user", "次の数列の続きは？ 1, 1, 2, 3, 5")]),
    ("system_multi_turn_ends_assistant", [m("system", "You answer in one word."),
                                          m("user", "Capital of France?"),
                                          m("assistant", "Paris"),
                                          m("user", "And of Japan?"),
                                          m("assistant", "東京")]),
    # Templates differ here: Gemma, Llama-2 and Llama-3 trim (Python str.strip: every Unicode
    # whitespace, U+3000 and U+001F included, but not U+200B or U+FEFF); the others keep it all.
    ("whitespace_and_newlines", [m("system", "\n  Be brief.\t\n"),
                                 m("user", "  \n先頭と末尾に空白があります。\n\n  "),
                                 m("assistant", "\t答え:\n- 一つ目\n- 二つ目 \n\n"),
                                 m("user", "\u3000全角スペース\u3000\u00a0\x1f"),
                                 m("assistant", "\u200bzero width\ufeff "),
                                 m("user", "\r\nline\r\nbreaks\u2028")]),
    ("template_syntax_in_content", [m("user", "{{ bos_token }} {% if true %}<end_of_turn>[INST]<|im_end|>{% endif %}"),
                                    m("assistant", "<<SYS>>\n### 応答:\n</s>"),
                                    m("user", "''\"\\n\\\\")]),
    ("empty_contents", [m("system", ""), m("user", ""), m("assistant", ""), m("user", " ")]),
    ("system_only", [m("system", "You are terse.")]),
    ("user_user", [m("user", "一つ目"), m("user", "二つ目")]),
    ("assistant_first", [m("assistant", "Hi, how can I help?"), m("user", "Tell me a joke.")]),
    ("system_mid_conversation", [m("user", "Hi"), m("assistant", "Hello"),
                                 m("system", "Now answer in Japanese."), m("user", "How are you?")]),
    ("system_at_odd_index", [m("user", "Hi"), m("system", "Be formal."), m("user", "Hello?")]),
    ("system_then_assistant", [m("system", "Be kind."), m("assistant", "Hello!"), m("user", "Hi")]),
]


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def environment():
    # As transformers' _compile_jinja_template (4.4x): sandboxed, trim_blocks, lstrip_blocks,
    # loopcontrols, raise_exception and strftime_now globals, its own tojson. (Its AssistantTracker
    # extension only adds the {% generation %} tag, which none of these templates use.)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def fold_gemma_system(messages):
    """Kumihimo's Gemma convention: a leading system message joins the first user turn."""
    if len(messages) >= 2 and messages[0]["role"] == "system" and messages[1]["role"] == "user":
        folded = m("user", messages[0]["content"] + "\n\n" + messages[1]["content"])
        return [folded] + messages[2:]
    return messages


def main():
    env = environment()
    out = {}
    for fmt, tokens in FORMATS.items():
        with open(os.path.join(GOLDEN, fmt + ".jinja"), encoding="utf-8") as f:
            source = f.read()
        if source.endswith("\n"):
            source = source[:-1]  # the file's final newline is not part of the template string
        template = env.from_string(source)
        cases = []
        for name, messages in CONVERSATIONS:
            for gen in (True, False):
                given = fold_gemma_system(messages) if fmt == "gemma" else messages
                case = {"name": name, "messages": messages, "add_generation_prompt": gen,
                        "bos": tokens["bos"], "eos": tokens["eos"]}
                try:
                    case["rendered"] = template.render(messages=given, add_generation_prompt=gen,
                                                       bos_token=tokens["bos"], eos_token=tokens["eos"])
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = True
                    case["error_message"] = str(e)
                cases.append(case)
        out[fmt] = cases
    path = os.path.join(GOLDEN, "expected.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    n = sum(len(c) for c in out.values())
    errors = sum(1 for c in out.values() for x in c if x.get("error"))
    print(f"wrote {path}: {n} renderings ({errors} raise) with jinja2 {jinja2.__version__}", file=sys.stderr)


if __name__ == "__main__":
    main()
