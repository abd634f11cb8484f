// safetensors files: a read-only mmap reader that hands out zero-copy tensor views, and a
// streaming, sharded writer that never leaves a half-written file under the final name.
// Views alias the mapping: never write through them (clone first); the mapping is private, so a
// stray write changes only this process's copy, never the file.
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/io/safetensors_header.h"

namespace kh {

// libtorch's scalar type for a safetensors dtype; throws kh::Error naming `where` for dtypes
// libtorch 1.13 has no type for (U16, U32, U64, F8_*).
c10::ScalarType toScalarType(st::DType d, const std::string& where);
st::DType fromScalarType(c10::ScalarType t);

// A whole file mapped read-only (MAP_PRIVATE). Shared by every view into it.
class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Tells the kernel we will read [offset, offset + length) soon, in order.
  void willNeed(uint64_t offset, uint64_t length) const;
  // Drops this process's pages of [offset, offset + length) (rounded out to whole pages): they stay
  // in the page cache, leave our RSS, and fault back in on the next read. Streaming readers call it
  // after each chunk so that a merge's RSS never holds more than one chunk of every input.
  void release(uint64_t offset, uint64_t length) const;

 private:
  MappedFile() = default;
  std::string path_;
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

class SafetensorsFile {
 public:
  // Maps and validates the whole header; throws kh::Error naming the file and the defect.
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return map_->path(); }
  const st::Header& header() const { return header_; }
  const std::vector<st::TensorEntry>& tensors() const { return header_.tensors; }
  const st::TensorEntry* find(const std::string& name) const;
  const st::TensorEntry& entry(const std::string& name) const;  // kh::Error when absent
  // Raw bytes of a tensor inside the mapping.
  const uint8_t* bytes(const st::TensorEntry& e) const { return map_->data() + header_.dataOffset + e.begin; }
  // Zero-copy CPU view over the mapping (the view keeps the mapping alive). Only when the data is
  // not aligned to its element size is it copied.
  at::Tensor tensor(const std::string& name) const;
  at::Tensor tensor(const st::TensorEntry& e) const;
  const std::shared_ptr<MappedFile>& mapping() const { return map_; }

 private:
  std::shared_ptr<MappedFile> map_;
  st::Header header_;
  std::unordered_map<std::string, size_t> byName_;
};

// What the writer will write: a tensor's name, dtype and shape, known before any data is.
struct TensorSpec {
  std::string name;
  st::DType dtype = st::DType::F32;
  std::vector<int64_t> shape;
  uint64_t nbytes() const;
};

struct WriterOptions {
  uint64_t shardBytes = 5'000'000'000ull;  // Hugging Face's default "5GB"; 0 = one file
  std::map<std::string, std::string> metadata{{"format", "pt"}};
  std::string baseName = "model";  // model.safetensors, or model-00001-of-0000N.safetensors + index
};

// Writes a planned set of tensors into `dir`, split into shards as Hugging Face does (in plan
// order; a new shard starts when the next tensor would pass shardBytes; a tensor larger than a
// shard gets its own). Tensors may be written in any order; each file is written as
// "<name>.partial" and renamed only by finish(), after which the index (when sharded) is written
// the same way. Destroying an unfinished writer removes every partial file.
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::string dir, std::vector<TensorSpec> plan, WriterOptions options = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  const std::vector<std::string>& files() const { return fileNames_; }  // final names, in order
  void write(const std::string& name, const void* data, uint64_t nbytes);
  void write(const std::string& name, const at::Tensor& t);  // dtype and shape must match the plan
  // Streams one tensor in consecutive parts: each call appends `nbytes` at byte `offset` of the
  // tensor, which must equal the bytes already written; the tensor counts as written when full.
  void writePart(const std::string& name, uint64_t offset, const void* data, uint64_t nbytes);
  // Checks every tensor was written, flushes, renames into place. Returns the final file paths.
  std::vector<std::string> finish();
  void abandon();  // removes the partial files now

 private:
  struct Slot {
    size_t file;
    uint64_t offset;  // absolute, in the file
    uint64_t nbytes;
    uint64_t filled = 0;  // bytes written so far (writePart)
    bool written = false;
  };
  struct Shard {
    int fd = -1;
    std::string finalPath, partialPath;
    uint64_t writebackFrom = 0;  // bytes before this offset were handed to the disk (startWriteback)
  };
  void startWriteback(Shard& shard, uint64_t end);
  std::string dir_;
  std::vector<TensorSpec> plan_;
  WriterOptions options_;
  std::vector<std::string> fileNames_;
  std::vector<Shard> shards_;
  std::unordered_map<std::string, Slot> slots_;
  bool finished_ = false;
};

// One call for small outputs (tests, tools): writes `tensors` into one file at `path`.
void saveSafetensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                     const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

}  // namespace kh
