// Included last by every widgets/chat source: fails the build when a torch, ATen or c10 header got
// in, directly or through a core header (DESIGN.md: widgets never see torch; Qt's keywords clash).
#pragma once

#if defined(C10_MACROS_MACROS_H_) || defined(C10_MACROS_EXPORT_H_)
#error "a torch/ATen/c10 header reached widgets/chat: talk to core through torch-free facades (core/jobs/chat_engine.h)"
#endif
