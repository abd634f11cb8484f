// Finds and dlopens kumihimo_spshim once per process (RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND; under
// AddressSanitizer, which refuses DEEPBIND, dlmopen into a new namespace) and hands out its C
// functions. Only core/text/ uses it. Must never include sentencepiece headers
// nor link libsentencepiece: its protobuf copy would clash with libtorch's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/text/spshim/spshim.h"

namespace kh::sp {

// The shim's functions, resolved with dlsym. Stays valid for the life of the process.
struct ShimApi {
  std::string path;  // the file that was loaded
  int (*abi_version)(void);
  const char* (*last_error)(void);
  kh_sp_model* (*load)(const char*);
  kh_sp_model* (*load_serialized)(const char*, size_t);
  void (*free)(kh_sp_model*);
  int (*piece_size)(const kh_sp_model*);
  int (*piece_to_id)(const kh_sp_model*, const char*, size_t);
  long (*id_to_piece)(const kh_sp_model*, int, char*, size_t);
  int (*piece_flags)(const kh_sp_model*, int);
  float (*score)(const kh_sp_model*, int);
  int (*bos_id)(const kh_sp_model*);
  int (*eos_id)(const kh_sp_model*);
  int (*unk_id)(const kh_sp_model*);
  int (*pad_id)(const kh_sp_model*);
  long (*encode)(const kh_sp_model*, const char*, size_t, int32_t*, size_t);
  long (*decode)(const kh_sp_model*, const int32_t*, size_t, char*, size_t);
  long (*serialized)(const kh_sp_model*, char*, size_t);
  int (*train)(const char*, const char* const*, const size_t*, size_t);
};

// Loads the shim on first use (thread-safe; a failed attempt is retried on the next call).
// Throws kh::Error naming every place tried and why each failed.
const ShimApi& shim();

// Where shim() looks, in order: $KH_SPSHIM (when set, the only place), then next to the
// running executable, its ../lib and ../lib/kumihimo, then the build tree's copy.
std::vector<std::string> shimSearchPaths();

// Opens one candidate file and resolves every symbol; throws kh::Error on any failure.
// shim() uses it; exposed for tests of the failure messages.
ShimApi openShim(const std::string& path);

}  // namespace kh::sp
