// Precompiled header of kumihimo_core (and the tests that reuse it): the heavy, stable headers.
#pragma once
#include <ATen/ATen.h>
#include <nlohmann/json.hpp>
#include <map>
#include <memory>
#include <string>
#include <vector>
