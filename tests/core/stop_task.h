// The "learns to stop" task the training tests share (test_train.cpp, test_train_memory.cpp):
// 40 conversations "<n><m>の次は" -> "<n+1>です" in OpenAI messages JSONL, and the LoRA run that
// learns it on a tiny Gemma 2 in 60 steps.
#pragma once

#include <string>

namespace kh::test {

inline std::string stopTaskData() {
  const char* nums[] = {"一", "二", "三", "四", "五", "六", "七", "八", "九", "十"};
  std::string data;
  for (int i = 0; i < 40; ++i) {
    const std::string q = std::string(nums[i % 10]) + nums[(i / 10) % 10] + "の次は";
    const std::string a = std::string(nums[(i + 1) % 10]) + "です";
    data += R"({"messages": [{"role": "user", "content": ")" + q + R"("}, {"role": "assistant", "content": ")" + a + "\"}]}\n";
  }
  return data;
}

inline std::string stopTaskYaml(const std::string& model, const std::string& data) {
  return "model: " + model + "\ndata: " + data +
         "\neval_split: 0.2\nmethod: lora\nlora: {rank: 8, alpha: 16, target_modules: 'proj'}\n"
         "learning_rate: 0.01\nwarmup_steps: 5\nsteps: 60\nbatch_size: 8\nseed: 1\n"
         "eval_max_new_tokens: 16\nexport_merged: false\n";
}

}  // namespace kh::test
