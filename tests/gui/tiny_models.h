// Test data for the GUI tests: tiny model folders made by core (torch stays in tiny_models.cpp).
#pragma once
#include <string>

namespace kh::guitest {
// A tiny random checkpoint (fp32, no tokenizer unless asked: training and chat need one) of `family`
// into dir.
void makeTinyModel(const std::string& dir, const std::string& family, unsigned seed, int layers = 4,
                   bool withTokenizer = false);
}
