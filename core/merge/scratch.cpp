// Caching CPU allocator for merge scratch (see scratch.h).
#include "core/merge/scratch.h"

#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace kh::merge {
namespace {

constexpr size_t kMinCached = 64 * 1024;

class CachingAllocator final : public c10::Allocator {
 public:

  c10::DataPtr allocate(size_t n) const override {
    if (n < kMinCached || !active()) {
      // Outside a scope (the rest of the process, once installed) nothing is tracked: freed
      // straight by c10::free_cpu, no lock, no lookup. raw_deallocate still works: release()
      // frees any pointer it does not know.
      void* plain = c10::alloc_cpu(n);
      return {plain, plain, &c10::free_cpu, c10::Device(c10::DeviceType::CPU)};
    }
    // Best fit among the cached blocks; a new block is rounded up to a power of two, so that the
    // last, shorter chunk of a tensor and the chunks of other shapes reuse the same blocks.
    void* p = nullptr;
    size_t bytes = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.lower_bound(n);
      if (it != free_.end()) {
        bytes = it->first;
        p = it->second.back();
        it->second.pop_back();
        if (it->second.empty()) free_.erase(it);
      } else {
        bytes = size_t{1} << (64 - __builtin_clzll(static_cast<unsigned long long>(n - 1)));
        held_ += bytes;
        peak_ = std::max(peak_, held_);
      }
    }
    if (!p) p = c10::alloc_cpu(bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      sizes_[p] = bytes;
    }
    return {p, p, &CachingAllocator::release, c10::Device(c10::DeviceType::CPU)};
  }

  // libtorch's raw_allocate/raw_deallocate need the context to be the pointer and one deleter.
  c10::DeleterFnPtr raw_deleter() const override { return &CachingAllocator::release; }

  bool active() const { return scopes_.load(std::memory_order_relaxed) > 0; }
  void enter() {
    std::lock_guard<std::mutex> lock(mu_);
    if (scopes_++ == 0) peak_ = held_;
  }
  void leave() {
    std::vector<void*> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (--scopes_ > 0) return;
      for (auto& [bytes, list] : free_) {
        for (void* p : list) {
          drop.push_back(p);
          sizes_.erase(p);
        }
        held_ -= bytes * list.size();
      }
      free_.clear();
    }
    for (void* p : drop) c10::free_cpu(p);
  }
  uint64_t peak() const {
    std::lock_guard<std::mutex> lock(mu_);
    return peak_;
  }

 private:
  static void release(void* ptr);

  mutable std::mutex mu_;
  mutable std::map<size_t, std::vector<void*>> free_;
  mutable std::unordered_map<void*, size_t> sizes_;  // blocks of ours, cached or live
  mutable uint64_t held_ = 0, peak_ = 0;
  std::atomic<int> scopes_{0};  // changed under mu_; read without it on the allocation fast path
};

CachingAllocator& instance() {
  // Installed once, for the life of the process (libtorch keeps the pointer); outside a scope it
  // allocates and frees with c10::alloc_cpu / free_cpu, as libtorch's default allocator does.
  static CachingAllocator* a = [] {
    auto* alloc = new CachingAllocator();
    c10::SetCPUAllocator(alloc, /*priority=*/100);
    return alloc;
  }();
  return *a;
}

void CachingAllocator::release(void* ptr) {
  CachingAllocator& a = instance();
  {
    std::lock_guard<std::mutex> lock(a.mu_);
    auto it = a.sizes_.find(ptr);
    if (it != a.sizes_.end()) {
      if (a.scopes_ > 0) {
        a.free_[it->second].push_back(ptr);
        return;
      }
      a.held_ -= it->second;
      a.sizes_.erase(it);
    }
  }
  c10::free_cpu(ptr);
}

}  // namespace

ScratchScope::ScratchScope() { instance().enter(); }
ScratchScope::~ScratchScope() { instance().leave(); }
uint64_t ScratchScope::peakBytes() { return instance().peak(); }

}  // namespace kh::merge
