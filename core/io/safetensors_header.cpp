// Hardened safetensors header parser (see safetensors_header.h). Limits follow the reference
// reader (huggingface/safetensors): 100 MB header, contiguous offsets from 0, exact buffer end.
#include "core/io/safetensors_header.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "core/error.h"

namespace kh::st {

namespace {
struct DTypeInfo {
  DType d;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},   {DType::I8, "I8", 1},     {DType::I16, "I16", 2},
    {DType::U16, "U16", 2},   {DType::I32, "I32", 4}, {DType::U32, "U32", 4},   {DType::I64, "I64", 8},
    {DType::U64, "U64", 8},   {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2}, {DType::F32, "F32", 4},
    {DType::F64, "F64", 8},   {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
};

std::string shapeString(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

bool mulOverflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }
}  // namespace

size_t dtypeSize(DType d) {
  for (const auto& i : kDTypes)
    if (i.d == d) return i.size;
  KH_ASSERT(false, "dtype without a size");
  return 0;
}

const char* dtypeName(DType d) {
  for (const auto& i : kDTypes)
    if (i.d == d) return i.name;
  return "?";
}

std::optional<DType> parseDType(std::string_view s) {
  for (const auto& i : kDTypes)
    if (s == i.name) return i.d;
  return std::nullopt;
}

uint64_t TensorEntry::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

uint64_t readHeaderLength(const uint8_t* bytes, uint64_t fileSize, const std::string& what) {
  if (fileSize < 8)
    throw Error(what, "truncated file: " + std::to_string(fileSize) +
                          " bytes, but a safetensors file starts with an 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian
  if (n > kMaxHeaderBytes)
    throw Error(what, "header length " + std::to_string(n) + " bytes exceeds the 100 MB limit",
                "the file is corrupt or not a safetensors file");
  if (n > fileSize - 8)
    throw Error(what, "header length " + std::to_string(n) + " runs past the end of the file (" +
                          std::to_string(fileSize) + " bytes)",
                "the file is truncated or not a safetensors file");
  return n;
}

Header parseHeader(const uint8_t* bytes, uint64_t available, uint64_t fileSize, const std::string& what) {
  using nlohmann::json;
  Header h;
  h.headerLength = readHeaderLength(bytes, std::min(available, fileSize), what);
  KH_ASSERT(available >= 8 + h.headerLength, "caller must supply the whole header");
  h.dataOffset = 8 + h.headerLength;
  h.dataSize = fileSize - h.dataOffset;

  const char* js = reinterpret_cast<const char*>(bytes + 8);
  // Duplicate top-level names would be silently merged by the JSON library: catch them while parsing.
  // Depth is capped too: the format nests at most 3 deep (header -> entry -> shape).
  std::unordered_set<std::string> seen;
  std::string duplicate, tooDeep;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t ev, json& parsed) {
    if (ev == json::parse_event_t::key && depth == 1) {
      const auto& k = parsed.get_ref<const std::string&>();
      if (!seen.insert(k).second && duplicate.empty()) duplicate = k;
    }
    if ((ev == json::parse_event_t::object_start || ev == json::parse_event_t::array_start) && depth > 3)
      throw Error(what, "header JSON nests deeper than the format allows");
    return true;
  };
  json j;
  try {
    j = json::parse(js, js + h.headerLength, cb);
  } catch (const json::exception& e) {
    std::string m = e.what();
    throw Error(what, "header is not valid JSON (" + m.substr(0, 200) + ")", "the file is corrupt or not a safetensors file");
  }
  if (!duplicate.empty()) throw Error(what, "duplicate tensor name '" + duplicate + "' in the header");
  if (!j.is_object()) throw Error(what, std::string("header JSON is a ") + j.type_name() + ", not an object");

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw Error(what, "__metadata__ is not an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw Error(what, "__metadata__ value for '" + m.key() + "' is not a string");
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = what + ": tensor '" + name + "'";
    if (!v.is_object()) throw Error(where, "entry is not an object");
    auto dt = v.find("dtype");
    auto sh = v.find("shape");
    auto off = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) throw Error(where, "missing or non-string 'dtype'");
    if (sh == v.end() || !sh->is_array()) throw Error(where, "missing or non-array 'shape'");
    if (off == v.end() || !off->is_array() || off->size() != 2) throw Error(where, "'data_offsets' is not [begin, end]");
    TensorEntry e;
    e.name = name;
    auto d = parseDType(dt->get_ref<const std::string&>());
    if (!d) throw Error(where, "unknown dtype '" + dt->get<std::string>() + "'");
    e.dtype = *d;
    uint64_t bytesNeeded = dtypeSize(e.dtype);
    for (const auto& x : *sh) {
      if (!x.is_number_unsigned()) throw Error(where, "shape holds a value that is not a non-negative integer");
      uint64_t dim = x.get<uint64_t>();
      if (dim > static_cast<uint64_t>(INT64_MAX) || mulOverflows(bytesNeeded, dim, &bytesNeeded))
        throw Error(where, "shape " + sh->dump() + " overflows 64 bits");
      e.shape.push_back(static_cast<int64_t>(dim));
    }
    if (!(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
      throw Error(where, "data_offsets are not non-negative integers");
    e.begin = (*off)[0].get<uint64_t>();
    e.end = (*off)[1].get<uint64_t>();
    if (e.end < e.begin)
      throw Error(where, "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] end before they begin");
    if (e.end - e.begin != bytesNeeded)
      throw Error(where, "shape " + shapeString(e.shape) + " of " + dtypeName(e.dtype) + " needs " +
                             std::to_string(bytesNeeded) + " bytes but data_offsets span " +
                             std::to_string(e.end - e.begin));
    h.tensors.push_back(std::move(e));
  }

  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expect = 0;
  const TensorEntry* prev = nullptr;
  for (const auto& e : h.tensors) {
    if (e.begin != expect) {
      std::string where = what + ": tensor '" + e.name + "'";
      if (e.begin < expect)
        throw Error(where, "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                               "] overlap tensor '" + (prev ? prev->name : "") + "'");
      throw Error(where, "data_offsets begin at " + std::to_string(e.begin) + ", leaving a gap after byte " +
                             std::to_string(expect) + " (offsets must be contiguous from 0)");
    }
    expect = e.end;
    prev = &e;
  }
  if (expect != h.dataSize)
    throw Error(what, "data buffer ends at byte " + std::to_string(expect) + " but the file has " +
                          std::to_string(h.dataSize) + " bytes after the header",
                expect > h.dataSize ? "the file is truncated" : "the file has trailing bytes");
  return h;
}

std::string serializeHeader(const std::vector<TensorEntry>& tensors, const std::map<std::string, std::string>& metadata) {
  // Written by hand (not via a JSON object) to keep tensors in data order, as other writers do.
  nlohmann::json meta = metadata;
  std::string s = "{";
  bool first = true;
  if (!metadata.empty()) {
    s += "\"__metadata__\":" + meta.dump();
    first = false;
  }
  for (const auto& e : tensors) {
    if (!first) s += ",";
    first = false;
    nlohmann::json shape = e.shape;
    s += nlohmann::json(e.name).dump() + ":{\"dtype\":\"" + dtypeName(e.dtype) + "\",\"shape\":" + shape.dump() +
         ",\"data_offsets\":[" + std::to_string(e.begin) + "," + std::to_string(e.end) + "]}";
  }
  s += "}";
  while ((8 + s.size()) % 8 != 0) s += ' ';
  return s;
}

}  // namespace kh::st
