// safetensors mmap reader and sharded streaming writer (see safetensors.h).
#include "core/io/safetensors.h"

#include <ATen/ATen.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"

namespace kh {

namespace fs = std::filesystem;

c10::ScalarType toScalarType(st::DType d, const std::string& where) {
  using st::DType;
  switch (d) {
    case DType::BOOL: return at::kBool;
    case DType::U8: return at::kByte;
    case DType::I8: return at::kChar;
    case DType::I16: return at::kShort;
    case DType::I32: return at::kInt;
    case DType::I64: return at::kLong;
    case DType::F16: return at::kHalf;
    case DType::BF16: return at::kBFloat16;
    case DType::F32: return at::kFloat;
    case DType::F64: return at::kDouble;
    default:
      throw Error(where, std::string("dtype ") + st::dtypeName(d) + " has no libtorch 1.13 type",
                  "convert the checkpoint to F16, BF16 or F32");
  }
}

st::DType fromScalarType(c10::ScalarType t) {
  using st::DType;
  switch (t) {
    case at::kBool: return DType::BOOL;
    case at::kByte: return DType::U8;
    case at::kChar: return DType::I8;
    case at::kShort: return DType::I16;
    case at::kInt: return DType::I32;
    case at::kLong: return DType::I64;
    case at::kHalf: return DType::F16;
    case at::kBFloat16: return DType::BF16;
    case at::kFloat: return DType::F32;
    case at::kDouble: return DType::F64;
    default: KH_ASSERT(false, std::string("no safetensors dtype for ") + c10::toString(t)); return DType::F32;
  }
}

// ---------------------------------------------------------------------------------------------
// MappedFile

std::shared_ptr<MappedFile> MappedFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat sb {};
  if (fstat(fd, &sb) != 0) {
    int e = errno;
    ::close(fd);
    throw Error(path, std::string("cannot stat: ") + std::strerror(e));
  }
  if (!S_ISREG(sb.st_mode)) {
    ::close(fd);
    throw Error(path, "not a regular file");
  }
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->size_ = static_cast<uint64_t>(sb.st_size);
  if (m->size_ > 0) {
    // Private and writable: a stray in-place op on a view copies the page instead of crashing,
    // and never reaches the file.
    void* p = mmap(nullptr, m->size_, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      ::close(fd);
      throw Error(path, std::string("cannot map: ") + std::strerror(e));
    }
    m->data_ = static_cast<uint8_t*>(p);
  }
  ::close(fd);
  return m;
}

MappedFile::~MappedFile() {
  if (data_) munmap(data_, size_);
}

void MappedFile::willNeed(uint64_t offset, uint64_t length) const {
  if (!data_ || length == 0) return;
  uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  uint64_t start = offset / page * page;
  madvise(data_ + start, std::min(size_ - start, length + (offset - start)), MADV_WILLNEED);
}

void MappedFile::release(uint64_t offset, uint64_t length) const {
  if (!data_ || length == 0 || offset >= size_) return;
  // Rounded out to 2 MiB: the kernel maps whole page-cache folios (up to 2 MiB for large files read
  // sequentially) on a fault, so pages beyond the exact range would otherwise stay resident. What
  // the next read needs simply faults back in from the page cache.
  constexpr uint64_t kSpan = 2ull << 20;
  const uint64_t start = offset / kSpan * kSpan;
  const uint64_t end = std::min(size_, (offset + length + kSpan - 1) / kSpan * kSpan);
  madvise(data_ + start, end - start, MADV_DONTNEED);  // advisory: a failure only keeps the pages
}

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

std::shared_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  auto f = std::make_shared<SafetensorsFile>();
  f->map_ = MappedFile::open(path);
  const uint64_t size = f->map_->size();
  static const uint8_t kEmpty[8] = {0};
  f->header_ = st::parseHeader(size ? f->map_->data() : kEmpty, size, size, path);
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) f->byName_.emplace(f->header_.tensors[i].name, i);
  return f;
}

const st::TensorEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = byName_.find(name);
  return it == byName_.end() ? nullptr : &header_.tensors[it->second];
}

const st::TensorEntry& SafetensorsFile::entry(const std::string& name) const {
  const st::TensorEntry* e = find(name);
  if (!e) throw Error(path(), "no tensor named '" + name + "'");
  return *e;
}

at::Tensor SafetensorsFile::tensor(const std::string& name) const { return tensor(entry(name)); }

at::Tensor SafetensorsFile::tensor(const st::TensorEntry& e) const {
  const auto type = toScalarType(e.dtype, path() + ": tensor '" + e.name + "'");
  const auto opts = at::TensorOptions().dtype(type).device(at::kCPU);
  uint8_t* p = const_cast<uint8_t*>(bytes(e));
  if (e.nbytes() == 0) return at::empty(e.shape, opts);
  if (reinterpret_cast<uintptr_t>(p) % st::dtypeSize(e.dtype) != 0) {
    // Misaligned for its element type (a writer that did not pad): copy into aligned memory.
    at::Tensor t = at::empty(e.shape, opts);
    std::memcpy(t.data_ptr(), p, e.nbytes());
    return t;
  }
  auto keep = map_;  // the view owns a reference to the mapping
  return at::from_blob(p, e.shape, [keep](void*) mutable { keep.reset(); }, opts);
}

// ---------------------------------------------------------------------------------------------
// Writer

uint64_t TensorSpec::nbytes() const {
  uint64_t n = st::dtypeSize(dtype);
  for (int64_t d : shape) {
    KH_ASSERT(d >= 0, "negative dimension in " + name);
    KH_ASSERT(!__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n), "size overflow in " + name);
  }
  return n;
}

static void writeAll(int fd, const void* data, uint64_t n, uint64_t offset, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = pwrite(fd, p, std::min<uint64_t>(n, 1ull << 30), static_cast<off_t>(offset));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw Error(path, std::string("write failed: ") + std::strerror(errno));
    }
    p += w;
    n -= static_cast<uint64_t>(w);
    offset += static_cast<uint64_t>(w);
  }
}

SafetensorsWriter::SafetensorsWriter(std::string dir, std::vector<TensorSpec> plan, WriterOptions options)
    : dir_(std::move(dir)), plan_(std::move(plan)), options_(std::move(options)) {
  // Group tensors into shards, in plan order.
  std::vector<std::vector<size_t>> groups;
  uint64_t current = 0;
  for (size_t i = 0; i < plan_.size(); ++i) {
    const uint64_t n = plan_[i].nbytes();
    if (groups.empty() || (options_.shardBytes > 0 && current > 0 && current + n > options_.shardBytes)) {
      groups.emplace_back();
      current = 0;
    }
    groups.back().push_back(i);
    current += n;
    if (slots_.count(plan_[i].name)) throw Error(dir_, "tensor '" + plan_[i].name + "' planned twice");
    slots_[plan_[i].name] = Slot{};
  }
  if (groups.empty()) groups.emplace_back();

  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw Error(dir_, "cannot create folder: " + ec.message());

  const size_t nShards = groups.size();
  char buf[64];
  try {
    for (size_t s = 0; s < nShards; ++s) {
      std::string name;
      if (nShards == 1) {
        name = options_.baseName + ".safetensors";
      } else {
        std::snprintf(buf, sizeof buf, "-%05zu-of-%05zu.safetensors", s + 1, nShards);
        name = options_.baseName + buf;
      }
      fileNames_.push_back(name);
      std::vector<st::TensorEntry> entries;
      uint64_t off = 0;
      for (size_t i : groups[s]) {
        st::TensorEntry e;
        e.name = plan_[i].name;
        e.dtype = plan_[i].dtype;
        e.shape = plan_[i].shape;
        e.begin = off;
        e.end = off + plan_[i].nbytes();
        off = e.end;
        entries.push_back(std::move(e));
      }
      const std::string json = st::serializeHeader(entries, options_.metadata);
      Shard sh;
      sh.finalPath = dir_ + "/" + name;
      sh.partialPath = sh.finalPath + ".partial";
      sh.fd = ::open(sh.partialPath.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (sh.fd < 0) throw Error(sh.partialPath, std::string("cannot create: ") + std::strerror(errno));
      shards_.push_back(sh);
      uint8_t len[8];
      uint64_t n = json.size();
      for (int b = 0; b < 8; ++b) len[b] = static_cast<uint8_t>(n >> (8 * b));
      writeAll(sh.fd, len, 8, 0, sh.partialPath);
      writeAll(sh.fd, json.data(), json.size(), 8, sh.partialPath);
      // No ftruncate to the final size: tensors land by pwrite at their offsets, so a disk that
      // fills up fails the write that hits it (and finish() is never reached).
      const uint64_t dataStart = 8 + json.size();
      for (const auto& e : entries) slots_[e.name] = Slot{s, dataStart + e.begin, e.nbytes(), false};
    }
  } catch (...) {
    abandon();
    throw;
  }
}

SafetensorsWriter::~SafetensorsWriter() {
  if (!finished_) abandon();
}

void SafetensorsWriter::abandon() {
  for (auto& s : shards_) {
    if (s.fd >= 0) ::close(s.fd);
    s.fd = -1;
    ::unlink(s.partialPath.c_str());
  }
  if (!fileNames_.empty() && fileNames_.size() > 1)
    ::unlink((dir_ + "/" + options_.baseName + ".safetensors.index.json.partial").c_str());
}

// Hands every 64 MiB written to the disk at once (asynchronously) instead of leaving it dirty in
// the page cache until finish()'s fsync: a merge's output then streams out while it computes, and
// fsync finds little left. Without it an output below the kernel's dirty threshold (gigabytes) is
// written only after the last tensor: the whole write added to the merge's time.
void SafetensorsWriter::startWriteback(Shard& shard, uint64_t end) {
  constexpr uint64_t kStep = 64ull << 20;
  if (end < shard.writebackFrom + kStep) return;
  // Advisory: an error here (a file system without it) only leaves the pages to fsync.
  (void)sync_file_range(shard.fd, static_cast<off64_t>(shard.writebackFrom), static_cast<off64_t>(end - shard.writebackFrom),
                        SYNC_FILE_RANGE_WRITE);
  shard.writebackFrom = end;
}

void SafetensorsWriter::write(const std::string& name, const void* data, uint64_t nbytes) {
  KH_ASSERT(!finished_, "write after finish");
  auto it = slots_.find(name);
  if (it == slots_.end()) throw Error(dir_, "tensor '" + name + "' is not in the output plan");
  Slot& s = it->second;
  if (s.written) throw Error(dir_, "tensor '" + name + "' written twice");
  if (nbytes != s.nbytes)
    throw Error(dir_, "tensor '" + name + "': " + std::to_string(nbytes) + " bytes given, plan says " +
                          std::to_string(s.nbytes));
  writeAll(shards_[s.file].fd, data, nbytes, s.offset, shards_[s.file].partialPath);
  startWriteback(shards_[s.file], s.offset + nbytes);
  s.written = true;
}

void SafetensorsWriter::writePart(const std::string& name, uint64_t offset, const void* data, uint64_t nbytes) {
  KH_ASSERT(!finished_, "write after finish");
  auto it = slots_.find(name);
  if (it == slots_.end()) throw Error(dir_, "tensor '" + name + "' is not in the output plan");
  Slot& s = it->second;
  if (s.written) throw Error(dir_, "tensor '" + name + "' written twice");
  if (offset != s.filled || offset + nbytes > s.nbytes)
    throw Error(dir_, "tensor '" + name + "': part at byte " + std::to_string(offset) + " (+" + std::to_string(nbytes) +
                          ") does not follow the " + std::to_string(s.filled) + " bytes written of " +
                          std::to_string(s.nbytes));
  writeAll(shards_[s.file].fd, data, nbytes, s.offset + offset, shards_[s.file].partialPath);
  startWriteback(shards_[s.file], s.offset + offset + nbytes);
  s.filled += nbytes;
  s.written = s.filled == s.nbytes;
}

void SafetensorsWriter::write(const std::string& name, const at::Tensor& t) {
  auto it = std::find_if(plan_.begin(), plan_.end(), [&](const TensorSpec& p) { return p.name == name; });
  if (it == plan_.end()) throw Error(dir_, "tensor '" + name + "' is not in the output plan");
  if (fromScalarType(t.scalar_type()) != it->dtype || t.sizes().vec() != it->shape)
    throw Error(dir_, "tensor '" + name + "' has dtype/shape " + c10::toString(t.scalar_type()) + " " +
                          c10::str(t.sizes()) + ", plan says " + st::dtypeName(it->dtype) + " " +
                          c10::str(c10::IntArrayRef(it->shape)));
  at::Tensor c = t.device().is_cpu() ? t.contiguous() : t.to(at::kCPU).contiguous();
  write(name, c.data_ptr(), c.nbytes());
}

std::vector<std::string> SafetensorsWriter::finish() {
  KH_ASSERT(!finished_, "finish called twice");
  std::vector<std::string> missing;
  for (const auto& p : plan_)
    if (!slots_[p.name].written) missing.push_back(p.name);
  if (!missing.empty())
    throw Error(dir_, std::to_string(missing.size()) + " planned tensor(s) never written, first '" + missing[0] + "'");
  for (auto& s : shards_) {
    if (fsync(s.fd) != 0 || ::close(s.fd) != 0) throw Error(s.partialPath, std::string("cannot flush: ") + std::strerror(errno));
    s.fd = -1;
  }
  std::string indexPartial, indexFinal;
  if (shards_.size() > 1) {
    nlohmann::ordered_json idx;
    uint64_t total = 0;
    for (const auto& p : plan_) total += p.nbytes();
    idx["metadata"] = {{"total_size", total}};
    nlohmann::ordered_json wm = nlohmann::ordered_json::object();
    std::vector<std::string> names;
    for (const auto& p : plan_) names.push_back(p.name);
    std::sort(names.begin(), names.end());
    for (const auto& n : names) wm[n] = fileNames_[slots_[n].file];
    idx["weight_map"] = wm;
    indexFinal = dir_ + "/" + options_.baseName + ".safetensors.index.json";
    indexPartial = indexFinal + ".partial";
    FILE* f = std::fopen(indexPartial.c_str(), "wb");
    if (!f) throw Error(indexPartial, std::string("cannot create: ") + std::strerror(errno));
    std::string text = idx.dump(2) + "\n";
    bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
    ok = (std::fflush(f) == 0) && ok;
    ok = (fsync(fileno(f)) == 0) && ok;
    ok = (std::fclose(f) == 0) && ok;
    if (!ok) throw Error(indexPartial, "cannot write the index");
  }
  for (const auto& s : shards_)
    if (std::rename(s.partialPath.c_str(), s.finalPath.c_str()) != 0)
      throw Error(s.finalPath, std::string("cannot rename into place: ") + std::strerror(errno));
  if (!indexPartial.empty() && std::rename(indexPartial.c_str(), indexFinal.c_str()) != 0)
    throw Error(indexFinal, std::string("cannot rename into place: ") + std::strerror(errno));
  finished_ = true;
  std::vector<std::string> out;
  for (const auto& s : shards_) out.push_back(s.finalPath);
  return out;
}

void saveSafetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                     const std::map<std::string, std::string>& metadata) {
  fs::path p(path);
  std::vector<TensorSpec> plan;
  for (const auto& [n, t] : tensors) plan.push_back({n, fromScalarType(t.scalar_type()), t.sizes().vec()});
  WriterOptions o;
  o.shardBytes = 0;
  o.metadata = metadata;
  std::string fname = p.filename().string();
  const std::string ext = ".safetensors";
  KH_ASSERT(fname.size() > ext.size() && fname.substr(fname.size() - ext.size()) == ext, "path must end in .safetensors");
  o.baseName = fname.substr(0, fname.size() - ext.size());
  SafetensorsWriter w(p.has_parent_path() ? p.parent_path().string() : ".", plan, o);
  for (const auto& [n, t] : tensors) w.write(n, t);
  w.finish();
}

}  // namespace kh
