// Descriptor passing over a unix socket, for the hand-over between an agent and its successor (fdpass.cc).
#pragma once

#include <napi.h>

namespace ecnet {

// Sets exports.handover = { listen, accept, connect, send, recv, close }.
void InitFdPass(Napi::Env env, Napi::Object exports);

}  // namespace ecnet
