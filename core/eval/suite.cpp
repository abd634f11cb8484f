// Suite files and their JSONL items (see suite.h), parsed with yaml-cpp and nlohmann_json.
// Every error names the file and line where the fix belongs.
#include "core/eval/suite.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "core/error.h"

namespace kh::eval {

namespace fs = std::filesystem;

namespace {

std::string at(const std::string& path, const YAML::Node& n) { return path + ":" + std::to_string(n.Mark().line + 1); }

void checkKeys(const YAML::Node& n, const std::string& path, const std::set<std::string>& known, const std::string& what) {
  for (const auto& kv : n) {
    const std::string k = kv.first.Scalar();
    if (!known.count(k)) {
      std::string list;
      for (const auto& s : known) list += (list.empty() ? "" : ", ") + s;
      throw Error(at(path, kv.first), "unknown key '" + k + "' in " + what, "known keys: " + list);
    }
  }
}

template <typename T>
T scalar(const YAML::Node& n, const std::string& path, const std::string& key, const char* kind) {
  if (!n.IsScalar()) throw Error(at(path, n), "'" + key + "' must be " + kind);
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    throw Error(at(path, n), "'" + key + "' is '" + n.Scalar() + "', not " + kind);
  }
}

std::vector<std::string> stringList(const YAML::Node& n, const std::string& path, const std::string& key) {
  std::vector<std::string> out;
  if (n.IsScalar()) return {n.Scalar()};
  if (!n.IsSequence()) throw Error(at(path, n), "'" + key + "' must be a string or a list of strings");
  for (const auto& e : n) out.push_back(scalar<std::string>(e, path, key, "a string"));
  return out;
}

MetricSpec parseMetric(const YAML::Node& n, const std::string& path) {
  MetricSpec m;
  std::string name;
  if (n.IsScalar()) {
    name = n.Scalar();
    const std::string suffix = "+japanese";
    if (name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0) {
      m.requireJapanese = true;
      name.resize(name.size() - suffix.size());
    }
  } else if (n.IsMap()) {
    checkKeys(n, path, {"name", "japanese", "pattern"}, "a metric");
    if (!n["name"]) throw Error(at(path, n), "a metric needs a 'name'");
    name = scalar<std::string>(n["name"], path, "name", "a string");
    if (n["japanese"]) m.requireJapanese = scalar<bool>(n["japanese"], path, "japanese", "true or false");
    if (n["pattern"]) m.pattern = scalar<std::string>(n["pattern"], path, "pattern", "a string");
  } else {
    throw Error(at(path, n), "a metric is a name or a mapping {name, japanese, pattern}");
  }
  auto k = parseMetricKind(name);
  if (!k) throw Error(at(path, n), "unknown metric '" + name + "'", "known metrics: " + metricKindNames());
  m.kind = *k;
  if (!m.pattern.empty() && m.kind != MetricKind::Regex) throw Error(at(path, n), "only the regex metric takes a 'pattern'");
  if (m.requireJapanese && m.multipleChoice())
    throw Error(at(path, n), std::string(metricKindName(m.kind)) + " picks one of the given choices; it cannot require a Japanese answer");
  if (!m.pattern.empty()) {
    try {
      std::regex re(m.pattern, std::regex::ECMAScript);
    } catch (const std::regex_error& e) {
      throw Error(at(path, n["pattern"]), "regex '" + m.pattern + "' does not compile (" + e.what() + ")");
    }
  }
  return m;
}

std::string jsonString(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j[key].is_string()) throw Error(where, std::string("\"") + key + "\" must be a string");
  return j[key].get<std::string>();
}

std::vector<TaskItem> readItems(const std::string& path, const std::string& shownName) {
  std::ifstream f(path);
  if (!f) throw Error(path, "cannot read the item file");
  std::vector<TaskItem> items;
  std::set<std::string> ids;
  std::string line;
  int lineNo = 0;
  const std::set<std::string> known = {"id", "prompt", "messages", "references", "reference", "choices", "target", "split"};
  while (std::getline(f, line)) {
    ++lineNo;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(lineNo);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      throw Error(where, std::string("not valid JSON (") + e.what() + ")");
    }
    if (!j.is_object()) throw Error(where, "an item is a JSON object");
    for (const auto& [k, v] : j.items())
      if (!known.count(k)) throw Error(where, "unknown field \"" + k + "\"", "known fields: id, prompt, messages, references, reference, choices, target, split");
    TaskItem it;
    it.where = where;
    it.id = j.contains("id") ? (j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump()) : shownName + ":" + std::to_string(lineNo);
    if (!ids.insert(it.id).second) throw Error(where, "item id '" + it.id + "' is used twice");
    const bool hasPrompt = j.contains("prompt"), hasMessages = j.contains("messages");
    if (hasPrompt == hasMessages) throw Error(where, "an item needs either \"prompt\" or \"messages\"");
    if (hasPrompt) {
      it.prompt = jsonString(j, "prompt", where);
      if (it.prompt.empty()) throw Error(where, "\"prompt\" is empty");
    } else {
      if (!j["messages"].is_array() || j["messages"].empty()) throw Error(where, "\"messages\" must be a non-empty list");
      for (const auto& m : j["messages"]) {
        if (!m.is_object() || !m.contains("role") || !m.contains("content") || !m["role"].is_string() || !m["content"].is_string())
          throw Error(where, "each message needs string \"role\" and \"content\"");
        const std::string role = m["role"];
        if (role != "system" && role != "user" && role != "assistant")
          throw Error(where, "message role '" + role + "' is not system, user or assistant");
        it.messages.push_back({role, m["content"].get<std::string>()});
      }
      if (it.messages.back().role != "user") throw Error(where, "the last message must be the user's");
    }
    for (const char* key : {"references", "reference"}) {
      if (!j.contains(key)) continue;
      const auto& r = j[key];
      if (r.is_string()) it.references.push_back(r.get<std::string>());
      else if (r.is_array())
        for (const auto& e : r) {
          if (!e.is_string()) throw Error(where, std::string("\"") + key + "\" must hold strings");
          it.references.push_back(e.get<std::string>());
        }
      else if (r.is_number()) it.references.push_back(r.dump());
      else throw Error(where, std::string("\"") + key + "\" must be a string or a list of strings");
    }
    if (it.references.empty()) throw Error(where, "item '" + it.id + "' has no reference", "add \"references\": [\"...\"]");
    if (j.contains("choices")) {
      if (!j["choices"].is_array()) throw Error(where, "\"choices\" must be a list of strings");
      for (const auto& e : j["choices"]) {
        if (!e.is_string()) throw Error(where, "\"choices\" must be a list of strings");
        it.choices.push_back(e.get<std::string>());
      }
    }
    if (j.contains("target")) it.target = jsonString(j, "target", where);
    else it.target = it.references.front();
    if (j.contains("split")) {
      it.split = jsonString(j, "split", where);
      if (it.split != "fitness" && it.split != "heldout" && it.split != "fewshot")
        throw Error(where, "split '" + it.split + "' is not fitness, heldout or fewshot");
    }
    items.push_back(std::move(it));
  }
  return items;
}

// Checks that depend on the task's metrics: choices for mc, numbers for numeric, patterns for regex.
void checkItem(const TaskSpec& t, const TaskItem& it) {
  if (!it.messages.empty() && !t.chat)
    throw Error(it.where, "item has \"messages\" but task '" + t.name + "' is not a chat task", "set chat: true in the suite");
  if (t.needsChoices()) {
    if (it.choices.size() < 2) throw Error(it.where, "task '" + t.name + "' scores multiple choice: the item needs at least two \"choices\"");
    for (const auto& c : it.choices)
      if (c.empty()) throw Error(it.where, "a choice is empty");
    bool any = false;
    for (const auto& r : it.references) any = any || std::find(it.choices.begin(), it.choices.end(), r) != it.choices.end();
    if (!any) throw Error(it.where, "no reference is one of the choices");
  }
  for (const auto& m : t.metrics) {
    if (m.kind == MetricKind::Numeric)
      for (const auto& r : it.references)
        if (!lastNumber(r)) throw Error(it.where, "reference '" + r + "' has no number (metric numeric)");
    if (m.kind == MetricKind::Regex && m.pattern.empty())
      for (const auto& r : it.references) {
        try {
          std::regex re(r, std::regex::ECMAScript);
        } catch (const std::regex_error& e) {
          throw Error(it.where, "reference regex '" + r + "' does not compile (" + e.what() + ")");
        }
      }
  }
}

TaskSpec parseTask(const YAML::Node& n, const std::string& path, const fs::path& baseDir) {
  if (!n.IsMap()) throw Error(at(path, n), "a task is a mapping (name, data, metrics, ...)");
  checkKeys(n, path,
            {"name", "data", "metrics", "weight", "fitness_metric", "chat", "system", "few_shot", "few_shot_data",
             "few_shot_separator", "max_new_tokens", "stop"},
            "a task");
  TaskSpec t;
  for (const char* key : {"name", "data", "metrics"})
    if (!n[key]) throw Error(at(path, n), std::string("a task needs '") + key + "'");
  t.name = scalar<std::string>(n["name"], path, "name", "a string");
  if (t.name.empty()) throw Error(at(path, n["name"]), "a task name cannot be empty");
  auto resolve = [&](const YAML::Node& v, const char* key) {
    fs::path p = scalar<std::string>(v, path, key, "a path");
    if (p.is_relative()) p = baseDir / p;
    if (!fs::is_regular_file(p)) throw Error(at(path, v), std::string("'") + key + "' file " + p.string() + " does not exist");
    return p.string();
  };
  t.dataPath = resolve(n["data"], "data");
  const YAML::Node ms = n["metrics"];
  if (ms.IsSequence()) {
    for (const auto& m : ms) t.metrics.push_back(parseMetric(m, path));
  } else {
    t.metrics.push_back(parseMetric(ms, path));
  }
  if (t.metrics.empty()) throw Error(at(path, ms), "'metrics' is empty");
  std::set<std::string> names;
  for (const auto& m : t.metrics)
    if (!names.insert(m.name()).second) throw Error(at(path, ms), "metric '" + m.name() + "' is listed twice");
  if (n["fitness_metric"]) {
    const std::string f = scalar<std::string>(n["fitness_metric"], path, "fitness_metric", "a metric name");
    bool found = false;
    for (size_t i = 0; i < t.metrics.size(); ++i)
      if (t.metrics[i].name() == f) {
        t.fitnessMetric = i;
        found = true;
      }
    if (!found) throw Error(at(path, n["fitness_metric"]), "fitness_metric '" + f + "' is not one of the task's metrics");
  }
  if (n["weight"]) {
    t.weight = scalar<double>(n["weight"], path, "weight", "a number");
    if (!std::isfinite(t.weight)) throw Error(at(path, n["weight"]), "weight must be finite");
  }
  if (n["chat"]) t.chat = scalar<bool>(n["chat"], path, "chat", "true or false");
  if (n["system"]) {
    t.system = scalar<std::string>(n["system"], path, "system", "a string");
    if (!t.chat) throw Error(at(path, n["system"]), "'system' needs chat: true");
  }
  if (n["few_shot"]) {
    t.fewShot = scalar<int64_t>(n["few_shot"], path, "few_shot", "a count");
    if (t.fewShot < 0) throw Error(at(path, n["few_shot"]), "few_shot must be 0 or more");
  }
  if (n["few_shot_separator"]) t.fewShotSeparator = scalar<std::string>(n["few_shot_separator"], path, "few_shot_separator", "a string");
  if (n["max_new_tokens"]) {
    t.maxNewTokens = scalar<int64_t>(n["max_new_tokens"], path, "max_new_tokens", "a count");
    if (t.maxNewTokens < 1) throw Error(at(path, n["max_new_tokens"]), "max_new_tokens must be at least 1");
  }
  if (n["stop"]) {
    t.stopStrings = stringList(n["stop"], path, "stop");
    for (const auto& s : t.stopStrings)
      if (s.empty()) throw Error(at(path, n["stop"]), "a stop string cannot be empty");
  }

  auto items = readItems(t.dataPath, fs::path(t.dataPath).filename().string());
  std::vector<TaskItem> shots;
  if (n["few_shot_data"]) {
    const std::string sp = resolve(n["few_shot_data"], "few_shot_data");
    shots = readItems(sp, fs::path(sp).filename().string());
  }
  for (auto& it : items) {
    checkItem(t, it);
    if (it.split == "fewshot") {
      if (!n["few_shot_data"]) shots.push_back(it);
    } else {
      t.items.push_back(std::move(it));
    }
  }
  for (const auto& s : shots) {
    if (!s.messages.empty())
      throw Error(s.where, "a few-shot example needs a \"prompt\" (its messages would be ambiguous as an example)");
    if (n["few_shot_data"]) checkItem(t, s);
  }
  if (t.fewShot > static_cast<int64_t>(shots.size()))
    throw Error(at(path, n["few_shot"]),
                "few_shot: " + std::to_string(t.fewShot) + " but only " + std::to_string(shots.size()) + " items have split \"fewshot\"");
  t.examples.assign(shots.begin(), shots.begin() + t.fewShot);
  if (t.items.empty()) throw Error(t.dataPath, "task '" + t.name + "' has no fitness or heldout items");
  return t;
}

}  // namespace

bool TaskSpec::needsGeneration() const {
  for (const auto& m : metrics)
    if (!m.multipleChoice()) return true;
  return false;
}

bool TaskSpec::needsChoices() const {
  for (const auto& m : metrics)
    if (m.multipleChoice()) return true;
  return false;
}

bool Suite::needsChat() const {
  for (const auto& t : tasks)
    if (t.chat) return true;
  return false;
}

Suite loadSuite(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw Error(path, "cannot read the suite file");
  std::stringstream ss;
  ss << f.rdbuf();
  YAML::Node root;
  try {
    root = YAML::Load(ss.str());
  } catch (const YAML::Exception& e) {
    throw Error(path + ":" + std::to_string(e.mark.line + 1), "not valid YAML (" + e.msg + ")");
  }
  if (!root.IsMap()) throw Error(path, "a suite is a YAML mapping (name, tasks)");
  checkKeys(root, path, {"name", "tasks", "description"}, "the suite");
  Suite s;
  s.path = path;
  if (!root["name"]) throw Error(path + ":1", "the suite needs a 'name'");
  s.name = scalar<std::string>(root["name"], path, "name", "a string");
  if (s.name.empty()) throw Error(at(path, root["name"]), "the suite name cannot be empty");
  if (!root["tasks"]) throw Error(path + ":1", "the suite needs 'tasks'");
  if (!root["tasks"].IsSequence() || root["tasks"].size() == 0) throw Error(at(path, root["tasks"]), "'tasks' must be a non-empty list");
  const fs::path baseDir = fs::path(path).parent_path();
  std::set<std::string> names;
  for (const auto& t : root["tasks"]) {
    s.tasks.push_back(parseTask(t, path, baseDir));
    if (!names.insert(s.tasks.back().name).second) throw Error(at(path, t), "task name '" + s.tasks.back().name + "' is used twice");
  }
  return s;
}

void validateSplit(const std::string& split) {
  if (split != "fitness" && split != "heldout" && split != "all")
    throw Error("--split", "'" + split + "' is not fitness, heldout or all");
}

bool splitSelected(const std::string& itemSplit, const std::string& selected) {
  return selected == "all" ? (itemSplit == "fitness" || itemSplit == "heldout") : itemSplit == selected;
}

}  // namespace kh::eval
