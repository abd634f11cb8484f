// Scratch memory for streaming merges: while a ScratchScope lives, libtorch's CPU allocations of
// 64 KiB and more are served from per-size free lists and returned there, instead of to malloc.
// A merge allocates the same few chunk-sized buffers over and over; glibc would otherwise serve
// them from a heap whose fragmentation makes the resident memory wander between one and three
// times what is live, so no plan could predict it. With the scope, the memory held is a fixed
// function of the buffers a chunk needs (what planMerge counts), and every chunk after the first
// allocates nothing new. Leaving the scope frees the cached blocks.
#pragma once

#include <cstdint>

namespace kh::merge {

class ScratchScope {
 public:
  ScratchScope();
  ~ScratchScope();
  ScratchScope(const ScratchScope&) = delete;
  ScratchScope& operator=(const ScratchScope&) = delete;
  // The most bytes held at once in blocks of 64 KiB and more (live plus cached) in this scope.
  static uint64_t peakBytes();
};

}  // namespace kh::merge
