// libFuzzer target for kh::st::parseHeader: the fuzz input is a whole safetensors file.
// kh::Error is the expected way to refuse bad input; anything else (another exception, a
// KH_ASSERT, a sanitizer report, a broken invariant of an accepted header) is a finding.
// Must never link torch, and never swallow anything but kh::Error.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <string>

#include "core/error.h"
#include "core/io/safetensors_header.h"

namespace {

[[noreturn]] void finding(const char* what) {
  std::fprintf(stderr, "FINDING: %s\n", what);
  std::abort();  // libFuzzer saves the input as crash-<sha1>
}

// What an accepted header promises its users (SafetensorsFile computes addresses from it).
void checkAccepted(const kh::st::Header& h, uint64_t fileSize) {
  if (h.dataOffset != 8 + h.headerLength || h.dataOffset > fileSize) finding("data offset outside the file");
  if (h.dataOffset + h.dataSize != fileSize) finding("data buffer does not end at the end of the file");
  uint64_t expect = 0;
  for (const auto& e : h.tensors) {
    if (e.begin != expect || e.end < e.begin || e.end > h.dataSize) finding("tensor offsets not contiguous/in bounds");
    // numel() multiplies without checks: the parser's overflow check must make this exact.
    if (e.numel() * kh::st::dtypeSize(e.dtype) != e.nbytes()) finding("numel * dtype size != nbytes");
    for (int64_t d : e.shape)
      if (d < 0) finding("negative dimension accepted");
    expect = e.end;
  }
  if (expect != h.dataSize) finding("tensors do not cover the data buffer");
}

// serializeHeader must write what parseHeader reads back as the same header.
void checkRoundTrip(const kh::st::Header& h) {
  const std::string json = kh::st::serializeHeader(h.tensors, h.metadata);
  if ((8 + json.size()) % 8 != 0) finding("serialized header is not padded to 8 bytes");
  std::string file(8, '\0');
  for (int b = 0; b < 8; ++b) file[static_cast<size_t>(b)] = static_cast<char>((json.size() >> (8 * b)) & 0xff);
  file += json;
  file.append(h.dataSize, '\0');
  kh::st::Header r;
  try {
    r = kh::st::parseHeader(reinterpret_cast<const uint8_t*>(file.data()), file.size(), file.size(), "roundtrip");
  } catch (const kh::Error& e) {
    std::fprintf(stderr, "round trip refused: %s\n", e.what());
    finding("parseHeader refuses what serializeHeader wrote");
  }
  if (r.metadata != h.metadata) finding("metadata changed in the round trip");
  if (r.tensors.size() != h.tensors.size()) finding("tensor count changed in the round trip");
  // Zero-byte tensors share an offset, so their order may differ: compare by name.
  std::map<std::string, const kh::st::TensorEntry*> byName;
  for (const auto& e : h.tensors) byName[e.name] = &e;
  for (const auto& e : r.tensors) {
    auto it = byName.find(e.name);
    if (it == byName.end()) finding("tensor name changed in the round trip");
    const auto& o = *it->second;
    if (o.dtype != e.dtype || o.shape != e.shape || o.begin != e.begin || o.end != e.end)
      finding("tensor entry changed in the round trip");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const uint8_t kEmpty[8] = {0};
  const uint8_t* bytes = size ? data : kEmpty;  // libFuzzer may pass nullptr for the empty input
  kh::st::Header h;
  try {
    h = kh::st::parseHeader(bytes, size, size, "fuzz.safetensors");
  } catch (const kh::Error&) {
    return 0;  // an expected refusal
  } catch (const std::exception& e) {
    std::fprintf(stderr, "unexpected %s\n", e.what());
    finding("parseHeader threw something other than kh::Error");
  } catch (...) {
    finding("parseHeader threw a non-std exception");
  }
  checkAccepted(h, size);
  checkRoundTrip(h);
  return 0;
}
