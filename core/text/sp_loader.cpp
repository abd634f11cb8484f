// Locates and dlopens kumihimo_spshim (see sp_loader.h). Must never link libsentencepiece or
// include its headers, and must never dlclose the shim (handles into it live until exit).
#include "core/text/sp_loader.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdlib>
#include <sys/stat.h>

#include "core/error.h"

#ifndef KH_SPSHIM_BUILD_PATH
#define KH_SPSHIM_BUILD_PATH ""
#endif
#ifndef KH_SPSHIM_FILE_NAME
#define KH_SPSHIM_FILE_NAME "libkumihimo_spshim.so"
#endif

#if defined(__SANITIZE_ADDRESS__)
#define KH_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KH_UNDER_ASAN 1
#endif
#endif

namespace kh::sp {

namespace {

std::string exeDir() {
  std::string buf(4096, '\0');
  ssize_t n = readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) return {};
  buf.resize(static_cast<size_t>(n));
  size_t slash = buf.find_last_of('/');
  return slash == std::string::npos ? std::string() : buf.substr(0, slash);
}

bool isFile(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

template <class F>
void resolve(void* handle, const std::string& path, const char* name, F*& out) {
  dlerror();
  void* sym = dlsym(handle, name);
  if (!sym) {
    const char* e = dlerror();
    throw Error(path, std::string("missing symbol ") + name + (e ? std::string(" (") + e + ")" : ""),
                "rebuild kumihimo_spshim together with kumihimo_core");
  }
  out = reinterpret_cast<F*>(sym);
}

}  // namespace

std::vector<std::string> shimSearchPaths() {
  if (const char* env = std::getenv("KH_SPSHIM"); env && *env) return {env};
  std::vector<std::string> paths;
  const std::string file = KH_SPSHIM_FILE_NAME;
  if (std::string dir = exeDir(); !dir.empty()) {
    paths.push_back(dir + "/" + file);
    paths.push_back(dir + "/../lib/" + file);
    paths.push_back(dir + "/../lib/kumihimo/" + file);
  }
  if (std::string build = KH_SPSHIM_BUILD_PATH; !build.empty()) paths.push_back(build);
  return paths;
}

ShimApi openShim(const std::string& path) {
  dlerror();
#ifndef KH_UNDER_ASAN
  // DEEPBIND makes libsentencepiece bind to its own protobuf 3.14 copy rather than libtorch's
  // 3.21 (without it: "compiled against version 3.14.0 ... installed version (3.21.12)", abort).
  void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
#else
  // The sanitizer runtime refuses RTLD_DEEPBIND; a separate link namespace isolates protobuf
  // just as well. The shim is built without sanitizers for this (see spshim/CMakeLists.txt).
  void* h = dlmopen(LM_ID_NEWLM, path.c_str(), RTLD_NOW | RTLD_LOCAL);
#endif
  if (!h) {
    const char* e = dlerror();
    throw Error(path, std::string("cannot load the sentencepiece shim: ") + (e ? e : "dlopen failed"));
  }
  ShimApi api{};
  api.path = path;
  resolve(h, path, "kh_sp_abi_version", api.abi_version);
  if (api.abi_version() != KH_SPSHIM_ABI_VERSION)
    throw Error(path,
                "sentencepiece shim ABI version " + std::to_string(api.abi_version()) + ", expected " +
                    std::to_string(KH_SPSHIM_ABI_VERSION),
                "rebuild kumihimo_spshim together with kumihimo_core");
  resolve(h, path, "kh_sp_last_error", api.last_error);
  resolve(h, path, "kh_sp_load", api.load);
  resolve(h, path, "kh_sp_load_serialized", api.load_serialized);
  resolve(h, path, "kh_sp_free", api.free);
  resolve(h, path, "kh_sp_piece_size", api.piece_size);
  resolve(h, path, "kh_sp_piece_to_id", api.piece_to_id);
  resolve(h, path, "kh_sp_id_to_piece", api.id_to_piece);
  resolve(h, path, "kh_sp_piece_flags", api.piece_flags);
  resolve(h, path, "kh_sp_score", api.score);
  resolve(h, path, "kh_sp_bos_id", api.bos_id);
  resolve(h, path, "kh_sp_eos_id", api.eos_id);
  resolve(h, path, "kh_sp_unk_id", api.unk_id);
  resolve(h, path, "kh_sp_pad_id", api.pad_id);
  resolve(h, path, "kh_sp_encode", api.encode);
  resolve(h, path, "kh_sp_decode", api.decode);
  resolve(h, path, "kh_sp_serialized", api.serialized);
  resolve(h, path, "kh_sp_train", api.train);
  return api;
}

namespace {

ShimApi findAndOpen() {
  const bool fromEnv = std::getenv("KH_SPSHIM") && *std::getenv("KH_SPSHIM");
  std::string tried;
  for (const std::string& p : shimSearchPaths()) {
    if (!tried.empty()) tried += ", ";
    if (!isFile(p)) {
      tried += p + " (not found)";
      continue;
    }
    try {
      return openShim(p);
    } catch (const Error& e) {
      tried += p + " (" + e.cause() + ")";
    }
  }
  throw Error("sentencepiece shim " KH_SPSHIM_FILE_NAME, "not loaded; tried " + tried,
              fromEnv ? "KH_SPSHIM is set; point it at " KH_SPSHIM_FILE_NAME " or unset it"
                      : "install it next to the executable, in ../lib/kumihimo/, or set KH_SPSHIM to its path");
}

}  // namespace

const ShimApi& shim() {
  // A function-local static whose initializer throws is retried on the next call.
  static const ShimApi api = findAndOpen();
  return api;
}

}  // namespace kh::sp
