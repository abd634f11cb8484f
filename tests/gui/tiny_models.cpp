// Tiny model folders for the GUI tests (see tiny_models.h).
#include "tests/gui/tiny_models.h"

#include "core/model/tiny.h"

namespace kh::guitest {
void makeTinyModel(const std::string& dir, const std::string& family, unsigned seed, int layers, bool withTokenizer) {
  TinyOptions o;
  o.family = family;
  o.seed = seed;
  o.layers = layers;
  o.dtype = st::DType::F32;
  o.withTokenizer = withTokenizer;
  makeTinyCheckpoint(dir, o);
}
}  // namespace kh::guitest
