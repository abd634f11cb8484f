// `inspect`: everything a researcher asks of a model folder before using it, as one JSON object
// (what --json prints and what later tools and the GUI read) and as a human report.
// Reads headers and JSON only; never touches tensor data.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "core/model/model_folder.h"

namespace kh {

struct InspectOptions {
  bool tensors = false;        // list every tensor with shape, dtype and file
  int64_t contextTokens = 4096;  // context the memory estimate plans for
};

nlohmann::ordered_json inspectModel(const ModelFolder& model, const InspectOptions& options = {});
std::string formatInspectReport(const nlohmann::ordered_json& report);

}  // namespace kh
