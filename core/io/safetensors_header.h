// The safetensors header: dtypes and the hardened parser of the 8-byte length + JSON header.
// No torch here (the fuzzer links this alone). Never trusts a byte of the file: every size,
// offset and name is checked before anyone computes an address from it.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kh::st {

// Every dtype of the safetensors format. Which ones libtorch can view is io/safetensors.h's business.
enum class DType : uint8_t { BOOL, U8, I8, I16, U16, I32, U32, I64, U64, F16, BF16, F32, F64, F8_E4M3, F8_E5M2 };

size_t dtypeSize(DType d);
const char* dtypeName(DType d);
std::optional<DType> parseDType(std::string_view s);

struct TensorEntry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets relative to the data buffer
  uint64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

struct Header {
  std::vector<TensorEntry> tensors;  // in data order (by begin offset)
  std::map<std::string, std::string> metadata;
  uint64_t headerLength = 0;  // N, the JSON length
  uint64_t dataOffset = 0;    // 8 + N: where the data buffer starts in the file
  uint64_t dataSize = 0;      // bytes of the data buffer
};

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference reader's limit (100 MB)

// Reads the 8-byte header length; `fileSize` is the whole file's size. Throws kh::Error naming `what`.
uint64_t readHeaderLength(const uint8_t* bytes, uint64_t fileSize, const std::string& what);

// Parses and validates a header. `bytes` holds at least the first 8 + N bytes of the file, `fileSize`
// is the size of the whole file. Throws kh::Error("<what>", cause) for every defect the reference
// reader refuses: truncation, header length past the end or over 100 MB, JSON that is not an
// object, unknown dtype, size/offset mismatch (with overflow checks), overlapping or
// non-contiguous offsets, duplicate names, a buffer that does not end at the end of the file.
Header parseHeader(const uint8_t* bytes, uint64_t available, uint64_t fileSize, const std::string& what);

// Serialises a header for the given tensors (offsets already assigned, in order) and metadata,
// padded with spaces so that 8 + N is a multiple of 8. Returns the JSON bytes (without the length).
std::string serializeHeader(const std::vector<TensorEntry>& tensors, const std::map<std::string, std::string>& metadata);

}  // namespace kh::st
