// The one table of model families. Adding a family: one new file with its FamilySpec, one line here.
#include "core/model/config.h"

namespace kh {

extern const FamilySpec kLlamaFamily;
extern const FamilySpec kMistralFamily;
extern const FamilySpec kGemma2Family;
extern const FamilySpec kGpt2Family;
extern const FamilySpec kQwen2Family;

const std::vector<const FamilySpec*>& families() {
  static const std::vector<const FamilySpec*> table = {&kLlamaFamily, &kMistralFamily, &kGemma2Family, &kGpt2Family,
                                                       &kQwen2Family};
  return table;
}

}  // namespace kh
