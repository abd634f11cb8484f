// kumihimo-cli subcommands: inspect, make-tiny.
#include "app/cli_commands.h"
#include "app/progress_line.h"

#include <iomanip>
#include <csignal>
#include <iostream>
#include <sstream>
#include <memory>

#include "core/error.h"
#include "core/model/inspect.h"
#include "core/merge/executor.h"
#include "core/model/chat_session.h"
#include "core/model/memory.h"
#include "core/model/generate.h"
#include "core/model/runtime.h"
#include "core/model/tiny.h"
#include "core/io/safetensors.h"
#include <ATen/ATen.h>
#include "core/text/tokenizer.h"
#include "core/train/trainer.h"

namespace kh::cli {

namespace {

// A subcommand's parsed options live as long as the app does.
struct InspectArgs {
  std::string dir;
  bool tensors = false, json = false;
  int64_t context = 4096;
};

struct MakeTinyArgs {
  std::string family, out, dtype;
  TinyOptions o;
  std::string shardSize;
  int64_t vocab = 0;
};

uint64_t parseSize(const std::string& s, const std::string& flag) {
  // "5GB", "500MB", "2GiB", "1000" (bytes).
  size_t i = 0;
  while (i < s.size() && (isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  if (i == 0) throw Error(flag, "'" + s + "' is not a size (try 5GB, 500MB, 2GiB)");
  double v = std::stod(s.substr(0, i));
  std::string u = s.substr(i);
  double mult = 1;
  if (u.empty() || u == "B") mult = 1;
  else if (u == "KB") mult = 1e3;
  else if (u == "MB") mult = 1e6;
  else if (u == "GB") mult = 1e9;
  else if (u == "KiB") mult = 1024.0;
  else if (u == "MiB") mult = 1024.0 * 1024;
  else if (u == "GiB") mult = 1024.0 * 1024 * 1024;
  else throw Error(flag, "unknown unit '" + u + "' in '" + s + "' (use B, KB, MB, GB, KiB, MiB, GiB)");
  return static_cast<uint64_t>(v * mult);
}

}  // namespace

void addInspect(CLI::App& app, Action& run) {
  auto args = std::make_shared<InspectArgs>();
  auto* sub = app.add_subcommand("inspect", "Describe a model folder: architecture, sizes, tokenizer, stop ids, memory");
  sub->add_option("DIR", args->dir, "Hugging Face model folder (config.json + *.safetensors)")->required();
  sub->add_flag("--tensors", args->tensors, "List every tensor with its shape, dtype and file");
  sub->add_flag("--json", args->json, "Print one JSON object instead of the report");
  sub->add_option("--context", args->context, "Context length the memory estimate plans for")->default_val(4096);
  sub->callback([args, &run]() { run = [args]() {
    ModelFolder m = ModelFolder::open(args->dir);
    InspectOptions opt;
    opt.tensors = args->tensors;
    opt.contextTokens = args->context;
    auto report = inspectModel(m, opt);
    if (args->json) std::cout << report.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
    else std::cout << formatInspectReport(report);
    std::cout.flush();
    m.requireExactLayout();  // a mismatch is an error (after the report, so the user sees the details)
  }; });
}

void addMakeTiny(CLI::App& app, Action& run) {
  auto a = std::make_shared<MakeTinyArgs>();
  auto* sub = app.add_subcommand("make-tiny", "Write a tiny random checkpoint of a family (real names, layouts, config fields)");
  sub->add_option("FAMILY", a->family, "llama | mistral | gemma2 | gpt2 | qwen2")->required();
  sub->add_option("-o,--out", a->out, "Output folder")->required();
  sub->add_option("--seed", a->o.seed, "Random seed")->default_val(0);
  sub->add_option("--dtype", a->dtype, "F32 | F16 | BF16 (default: the real model's)");
  sub->add_option("--layers", a->o.layers, "Decoder layers")->default_val(4);
  sub->add_option("--hidden", a->o.hidden, "Hidden size")->default_val(64);
  sub->add_option("--heads", a->o.heads, "Attention heads")->default_val(4);
  sub->add_option("--kv-heads", a->o.kvHeads, "Key/value heads (GPT-2: always = heads)")->default_val(2);
  sub->add_option("--intermediate", a->o.intermediate, "MLP size")->default_val(128);
  sub->add_option("--vocab", a->vocab, "Tokenizer pieces (default 768)");
  sub->add_option("--init-std", a->o.initStd, "Standard deviation of the random matrices (larger: logits big enough to reach soft-caps)")->default_val(0.05);
  sub->add_option("--sliding-window", a->o.slidingWindow, "Window of the sliding layers (Gemma2, Mistral)")->default_val(16);
  sub->add_option("--shard-size", a->shardSize, "Split the weights into shards of this size (e.g. 200KB)");
  sub->add_flag("--force", a->o.force, "Replace an existing output folder");
  sub->callback([a, &run]() { run = [a]() {
    a->o.family = a->family;
    if (!a->dtype.empty()) {
      auto d = st::parseDType(a->dtype);
      if (!d || (*d != st::DType::F32 && *d != st::DType::F16 && *d != st::DType::BF16))
        throw Error("--dtype", "'" + a->dtype + "' is not one of F32, F16, BF16");
      a->o.dtype = *d;
    }
    if (a->vocab > 0) a->o.vocab = a->vocab;
    if (!a->shardSize.empty()) a->o.shardBytes = parseSize(a->shardSize, "--shard-size");
    makeTinyCheckpoint(a->out, a->o);
    std::cout << "wrote " << a->out << " (" << a->family << ")\n";
  }; });
}

void addTokenize(CLI::App& app, Action& run) {
  struct Args {
    std::string dir, text;
    bool noSpecial = false, json = false;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("tokenize", "Show the token ids and pieces a model's tokenizer gives for a text");
  sub->add_option("DIR", a->dir, "Model folder (tokenizer.model + tokenizer_config.json)")->required();
  sub->add_option("TEXT", a->text, "Text to tokenize (UTF-8)")->required();
  sub->add_flag("--no-special", a->noSpecial, "Do not add bos/eos");
  sub->add_flag("--json", a->json, "Print one JSON object");
  addMecabDicFlag(sub);
  sub->callback([a, &run]() { run = [a]() {
    auto tok = Tokenizer::fromFolder(a->dir);
    auto ids = tok->encode(a->text, !a->noSpecial);
    nlohmann::ordered_json j;
    j["ids"] = ids;
    std::vector<std::string> pieces;
    for (int id : ids) pieces.push_back(tok->idToPiece(id));
    j["pieces"] = pieces;
    j["count"] = ids.size();
    j["decoded"] = tok->decode(ids);
    if (a->json) {
      std::cout << j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
      return;
    }
    std::cout << "ids      " << j["ids"].dump() << "\npieces   " << j["pieces"].dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\ncount    " << ids.size()
              << "\ndecoded  " << j["decoded"].get<std::string>() << "\n";
  }; });
}

void addLogits(CLI::App& app, Action& run) {
  struct Args {
    std::string dir, ids, out, device = "cpu", dtype;
    bool json = false;
    int top = 10;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("logits", "Next-token logits for given token ids (compare engines with --out)");
  sub->add_option("MODEL", a->dir, "Model folder")->required();
  sub->add_option("--ids", a->ids, "Comma-separated token ids, e.g. 1,2,3")->required();
  sub->add_option("--out", a->out, "Write the full [T, vocab] fp32 logits to this .safetensors file");
  sub->add_flag("--json", a->json, "Print {\"top\": [[id, logit], ...]} for the last position");
  sub->add_option("--top", a->top, "How many of the highest logits to print")->default_val(10);
  sub->add_option("--device", a->device, "cpu, cuda or cuda:N")->default_val("cpu");
  sub->add_option("--dtype", a->dtype, "fp32 | bf16 | fp16 (default: stored; fp16 runs as fp32 on CPU)");
  sub->callback([a, &run]() { run = [a]() {
    std::vector<int64_t> ids;
    std::string item;
    for (size_t i = 0; i <= a->ids.size(); ++i) {
      if (i == a->ids.size() || a->ids[i] == ',') {
        size_t used = 0;
        long long v = -1;
        try {
          v = std::stoll(item, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (item.empty() || used != item.size() || v < 0) throw Error("--ids", "'" + item + "' is not a token id");
        ids.push_back(v);
        item.clear();
      } else if (a->ids[i] != ' ') {
        item += a->ids[i];
      }
    }
    ModelFolder folder = ModelFolder::open(a->dir);
    for (int64_t id : ids)
      if (id >= folder.config.vocabSize)
        throw Error("--ids", "id " + std::to_string(id) + " is outside the vocabulary (" + std::to_string(folder.config.vocabSize) + ")");
    if (static_cast<int64_t>(ids.size()) > folder.config.maxPositions)
      throw Error("--ids", std::to_string(ids.size()) + " ids exceed the model's context of " + std::to_string(folder.config.maxPositions));
    RunOptions ro;
    ro.device = a->device;
    ro.dtype = a->dtype;
    auto model = Model::load(folder, ro);
    at::Tensor logits = model->logits(ids).to(at::kCPU).contiguous();  // [T, V] fp32
    if (!a->out.empty()) saveSafetensors(a->out, {{"logits", logits}, {"ids", at::tensor(ids, at::kLong)}});
    auto [vals, idx] = logits[-1].topk(std::min<int64_t>(a->top, logits.size(1)));
    nlohmann::ordered_json top = nlohmann::ordered_json::array();
    for (int64_t i = 0; i < vals.size(0); ++i) top.push_back({idx[i].item<int64_t>(), vals[i].item<double>()});
    if (a->json) {
      std::cout << nlohmann::ordered_json{{"top", top}}.dump() << "\n";
      return;
    }
    const auto& tok = folder.tokenizer;  // optional here: pieces are shown when there is one
    std::cout << "next-token logits after " << ids.size() << " ids (" << c10::toString(model->dtype()) << " on "
              << model->device() << "):\n";
    for (const auto& t : top) {
      const int64_t id = t[0];
      std::cout << "  " << std::setw(8) << id << "  " << std::setw(12) << std::fixed << std::setprecision(5)
                << t[1].get<double>() << "  " << (tok ? tok->idToPiece(static_cast<int>(id)) : "") << "\n";
    }
    if (!a->out.empty()) std::cout << "wrote " << a->out << " (logits [" << logits.size(0) << ", " << logits.size(1) << "] F32)\n";
  }; });
}

static std::string generationSummary(const GenerationResult& r) {
  std::ostringstream o;
  o << "[stop: " << stopReasonName(r.reason) << " | " << r.ids.size() << " new tokens after " << r.promptTokens
    << " | first token " << std::fixed << std::setprecision(1) << r.timeToFirstTokenMs << " ms | "
    << r.tokensPerSecond << " tokens/s]";
  return o.str();
}

void addModelArgs(CLI::App* sub, ModelArgs& m) {
  sub->add_option("MODEL", m.dir, "Model folder")->required();
  sub->add_option("--device", m.device, "cpu, cuda or cuda:N")->default_val("cpu");
  sub->add_option("--dtype", m.dtype, "fp32 | bf16 | fp16 (default: stored; fp16 runs as fp32 on CPU)");
  sub->add_option("--adapter", m.adapter, "PEFT LoRA adapter folder (adapter_config.json) applied at run time");
}
LoadedModel loadModel(const ModelArgs& m) {
  LoadedModel l;
  l.folder = ModelFolder::open(m.dir);
  l.tokenizer = l.folder.requireTokenizer();
  RunOptions ro;
  ro.device = m.device;
  ro.dtype = m.dtype;
  l.model = Model::load(l.folder, ro);
  if (!m.adapter.empty()) train::loadPeftAdapter(*l.model, m.adapter);
  return l;
}

// Sampling flags shared by generate and chat.
static void addSamplingFlags(CLI::App* sub, SamplingOptions& s) {
  sub->add_option("--temperature", s.temperature, "0 = greedy")->default_val(0.0);
  sub->add_option("--top-k", s.topK, "Keep the k most likely tokens (0 = off)")->default_val(0);
  sub->add_option("--top-p", s.topP, "Nucleus: keep the smallest set reaching this mass, in (0, 1]")->default_val(1.0);
  sub->add_option("--min-p", s.minP, "Drop tokens below min-p times the top probability")->default_val(0.0);
  sub->add_option("--repetition-penalty", s.repetitionPenalty, "1 = off")->default_val(1.0);
  sub->add_option("--seed", s.seed, "Sampling seed")->default_val(0);
  sub->add_option("--max-new-tokens", s.maxNewTokens, "Length limit of the answer")->default_val(256);
  sub->add_option("--stop", s.stopStrings, "Stop when this text appears (repeatable)");
}

void addGenerate(CLI::App& app, Action& run) {
  struct Args {
    ModelArgs m;
    std::string prompt, system, templ;
    bool chat = false;
    SamplingOptions sampling;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("generate", "Continue a prompt (or answer it as a chat turn), streaming the text");
  addModelArgs(sub, a->m);
  sub->add_option("--prompt", a->prompt, "Text to continue, or the user's message with --chat")->required();
  sub->add_flag("--chat", a->chat, "Send the prompt as a user turn through the model's chat template");
  sub->add_option("--system", a->system, "System prompt (with --chat)");
  sub->add_option("--template", a->templ, "Chat format override: " + chatFormatNames());
  addSamplingFlags(sub, a->sampling);
  sub->callback([a, &run]() { run = [a]() {
    validateSampling(a->sampling);
    if (a->prompt.empty()) throw Error("--prompt", "is empty", "give some text to continue");
    auto [folder, tok, model] = loadModel(a->m);
    auto print = [](const std::string& t) { std::cout << t << std::flush; };
    GenerationResult r;
    if (a->chat) {
      ChatSession chat(folder, model, tok, a->templ);
      chat.system = a->system;
      chat.sampling = a->sampling;
      r = chat.reply(a->prompt, print);
    } else {
      if (!a->system.empty() || !a->templ.empty()) throw Error("--system/--template", "only apply with --chat");
      std::vector<int> stops;
      for (const auto& s : folder.stopTokens) stops.push_back(s.id);
      r = generate(*model, *tok, tok->encode(a->prompt, /*addSpecial=*/true), stops, a->sampling, print);
    }
    std::cout << "\n";
    std::cerr << generationSummary(r) << "\n";
  }; });
}

// Ctrl-C during an answer stops the answer, not the program.
static std::atomic<bool> gInterrupted{false};
extern "C" void khOnSigint(int) { gInterrupted.store(true); }

static const char* kChatHelp =
    "commands: /system TEXT (set, empty clears) | /reset | /set temperature|top_p|top_k|min_p|repetition_penalty|"
    "max_new_tokens|seed VALUE | /show | /help | /quit (or Ctrl-D); Ctrl-C stops an answer";

static void setSampling(SamplingOptions& s, const std::string& key, const std::string& value) {
  try {
    size_t used = 0;
    SamplingOptions t = s;
    if (key == "temperature") t.temperature = std::stod(value, &used);
    else if (key == "top_p") t.topP = std::stod(value, &used);
    else if (key == "min_p") t.minP = std::stod(value, &used);
    else if (key == "repetition_penalty") t.repetitionPenalty = std::stod(value, &used);
    else if (key == "top_k") t.topK = std::stoll(value, &used);
    else if (key == "max_new_tokens") t.maxNewTokens = std::stoll(value, &used);
    else if (key == "seed") t.seed = std::stoull(value, &used);
    else throw Error("/set", "unknown setting '" + key + "'", kChatHelp);
    if (used != value.size()) throw std::invalid_argument(value);
    validateSampling(t);
    s = t;
  } catch (const std::logic_error&) {
    throw Error("/set " + key, "'" + value + "' is not a number");
  }
}

void addChat(CLI::App& app, Action& run) {
  struct Args {
    ModelArgs m;
    std::string system, templ, rag, ragTemplate, ragLog;
    int ragK = 3;
    RerankFlags rerank;
    SamplingOptions sampling;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("chat", "Interactive chat in the terminal (streaming; Ctrl-C stops an answer)");
  addModelArgs(sub, a->m);
  sub->add_option("--system", a->system, "System prompt");
  sub->add_option("--template", a->templ, "Chat format override: " + chatFormatNames());
  sub->add_option("--rag", a->rag, "Retrieval store: its best chunks go before each message");
  sub->add_option("--rag-k", a->ragK, "Chunks retrieved per message (with --rag)")->default_val(3);
  sub->add_option("--rag-template", a->ragTemplate,
                  "File with the prompt the retrieved chunks go into: {context} (the kept chunks as [1] ..., [2] ...) and "
                  "{question} (default: the workbench's default template)");
  sub->add_option("--rag-log", a->ragLog,
                  "Append one JSON line per turn to this file: the message, the prompt sent and every hit with its scores");
  addMecabDicFlag(sub);
  addRerankFlags(sub, a->rerank);
  addSamplingFlags(sub, a->sampling);
  sub->callback([a, &run]() { run = [a]() {
    validateSampling(a->sampling);
    std::function<std::string(const std::string&)> augment;
    if (a->rag.empty() && (!a->ragTemplate.empty() || !a->ragLog.empty()))
      throw Error("chat", "--rag-template and --rag-log need --rag STORE");
    if (!a->rag.empty()) augment = makeRagAugmenter(a->rag, a->ragK, a->rerank, a->ragTemplate, a->ragLog);
    auto [folder, tok, model] = loadModel(a->m);
    ChatSession chat(folder, model, tok, a->templ);
    chat.system = a->system;
    chat.sampling = a->sampling;
    struct sigaction sa {};
    sa.sa_handler = khOnSigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: Ctrl-C at the prompt wakes the read
    sigaction(SIGINT, &sa, nullptr);
    std::cerr << "chatting with " << folder.dir << " (" << chatFormatName(chat.format()) << " format, "
              << c10::toString(model->dtype()) << " on " << model->device() << ")\n" << kChatHelp << "\n";
    std::string line;
    while (true) {
      std::cerr << "\n> " << std::flush;
      gInterrupted = false;
      if (!std::getline(std::cin, line)) {
        if (gInterrupted.load() && !std::cin.eof()) {  // Ctrl-C at the prompt: keep going
          std::cin.clear();
          std::cerr << "\n(Ctrl-C stops an answer; /quit or Ctrl-D leaves)";
          continue;
        }
        std::cerr << "\n";
        break;
      }
      if (line.empty()) continue;
      try {
        if (line == "/quit" || line == "/exit") break;
        if (line == "/help") { std::cerr << kChatHelp << "\n"; continue; }
        if (line == "/reset") { chat.reset(); std::cerr << "(conversation cleared)\n"; continue; }
        if (line == "/show") {
          const auto& s = chat.sampling;
          std::cerr << "system: " << (chat.system.empty() ? "(none)" : chat.system) << "\ntemperature " << s.temperature
                    << ", top_p " << s.topP << ", top_k " << s.topK << ", min_p " << s.minP << ", repetition_penalty "
                    << s.repetitionPenalty << ", max_new_tokens " << s.maxNewTokens << ", seed " << s.seed << ", "
                    << chat.turns.size() / 2 << " exchanges\n";
          continue;
        }
        if (line.rfind("/system", 0) == 0) {
          chat.system = line.size() > 8 ? line.substr(8) : "";
          std::cerr << "(system prompt " << (chat.system.empty() ? "cleared" : "set") << ")\n";
          continue;
        }
        if (line.rfind("/set ", 0) == 0) {
          std::istringstream in(line.substr(5));
          std::string key, value;
          in >> key >> value;
          setSampling(chat.sampling, key, value);
          std::cerr << "(" << key << " = " << value << ")\n";
          continue;
        }
        if (line[0] == '/') throw Error(line.substr(0, line.find(' ')), "unknown command", kChatHelp);
        auto r = chat.reply(augment ? augment(line) : line, [](const std::string& t) { std::cout << t << std::flush; }, &gInterrupted);
        std::cout << "\n";
        std::cerr << generationSummary(r) << "\n";
      } catch (const Error& e) {
        std::cerr << "error: " << e.what() << "\n";  // the conversation goes on
      }
    }
  }; });
}

// Ctrl-C (or SIGTERM) during a merge sets the executor's cancel flag, as evolve and train do: the
// merge stops at the next chunk and removes its OUT.partial-<host>-<pid> folder. A second signal, when the
// first did not stop it, ends the process the default way.
static std::atomic<bool> gMergeStop{false};
extern "C" void khMergeOnSignal(int sig) {
  gMergeStop.store(true);
  std::signal(sig, SIG_DFL);
}

void addMerge(CLI::App& app, Action& run) {
  struct Args {
    std::string recipe, out, device = "cpu", budget, shard = "5GB";
    std::optional<uint64_t> seed;
    bool plan = false, overwrite = false;
  };
  auto a = std::make_shared<Args>();
  auto* sub = app.add_subcommand("merge", "Merge models by a mergekit YAML recipe, streamed within a memory budget");
  sub->add_option("RECIPE", a->recipe, "mergekit YAML recipe")->required();
  sub->add_option("-o,--out", a->out, "Output model folder");
  sub->add_option("--device", a->device, "cpu, cuda or cuda:N")->default_val("cpu");
  sub->add_option("--memory-budget", a->budget, "Refuse to start above this peak (e.g. 8GiB)");
  sub->add_option("--shard-size", a->shard, "Output shard size")->default_val("5GB");
  sub->add_option("--seed", a->seed, "Seed of the random methods (DARE, DELLA); overrides random_seed");
  sub->add_flag("--plan", a->plan, "Print the memory plan and stop");
  sub->add_flag("--overwrite", a->overwrite, "Replace an existing output folder");
  sub->callback([a, &run]() { run = [a]() {
    auto recipe = merge::loadRecipe(a->recipe);
    merge::MergeOptions o;
    o.outDir = a->out;
    o.device = a->device;
    o.shardBytes = parseSize(a->shard, "--shard-size");
    if (!a->budget.empty()) o.memoryBudget = parseSize(a->budget, "--memory-budget");
    o.seed = a->seed;
    o.overwrite = a->overwrite;
    auto plan = merge::planMerge(recipe, o);
    std::cerr << plan.describe();
    if (a->plan) return;
    if (a->out.empty()) throw Error("merge", "no output folder", "pass -o OUT (or --plan for the plan only)");
    // One line: the bar, tensors done, the ETA and the tensor being merged.
    auto line = std::make_shared<ProgressLine>();
    o.onProgress = [line](const merge::MergeProgress& p) {
      const int width = 30, filled = static_cast<int>(width * p.fraction);
      std::ostringstream s;
      s << "[" << std::string(static_cast<size_t>(filled), '#') << std::string(static_cast<size_t>(width - filled), ' ') << "] "
        << p.done << "/" << p.total << " tensors  ETA ";
      // The first second's rate says little (page faults, the first tensor's sample): no guess yet.
      if (p.elapsedSeconds < 1.0 && p.fraction < 0.05) s << "?";
      else s << std::fixed << std::setprecision(0) << p.etaSeconds << " s";
      s << "  " << p.tensor;
      line->show(p.fraction, s.str());
    };
    gMergeStop = false;
    o.cancel = &gMergeStop;
    std::signal(SIGINT, khMergeOnSignal);
    std::signal(SIGTERM, khMergeOnSignal);
    merge::MergeReport report;
    try {
      report = merge::runMerge(recipe, o);
    } catch (const Cancelled&) {
      // main() prints "cancelled" and exits 130; the executor has removed its partial folder.
      line->clear();
      std::cerr << a->out << ": not written, merge ";  // the line ends "merge cancelled"
      throw;
    }
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
    line->end();
    for (const auto& n : report.notes) std::cerr << "note: " << n << "\n";
    std::cout << "wrote " << a->out << " (" << report.files.size() << " weight file(s), "
              << formatBytes(report.plan.outputBytes) << ", " << std::fixed << std::setprecision(1) << report.seconds << " s)\n";
    if (report.measuredRamPeak > 0)
      std::cout << "peak RAM " << formatBytes(report.measuredRamPeak) << " measured, " << formatBytes(report.plan.ramPeak)
                << " planned\n";
  }; });
}

}  // namespace kh::cli
