// Link: owns a struct bpf_link (and through it the link fd).
#pragma once

#include "common.h"

namespace ecnet {

// Drops our handle only: frees the struct and closes the link fd, never BPF_LINK_DETACH.
void ReleaseLink(struct bpf_link* link);

class Link : public Napi::ObjectWrap<Link> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Wraps `link` (ownership moves to the JS object, even when this throws). `desc` names it in errors.
  static Napi::Object Create(Napi::Env env, struct bpf_link* link, const std::string& desc);
  // The Link behind a JS value, or nullptr when it is not one.
  static Link* FromValue(Napi::Value value);

  explicit Link(const Napi::CallbackInfo& info);
  ~Link() override;

  // The open bpf_link; throws EBADF when closed.
  struct bpf_link* Need(Napi::Env env, const std::string& op) const;
  const std::string& Desc() const { return desc_; }

 private:
  Napi::Value Info(const Napi::CallbackInfo& info);
  void Pin(const Napi::CallbackInfo& info);
  void Unpin(const Napi::CallbackInfo& info);
  void Detach(const Napi::CallbackInfo& info);
  void Close(const Napi::CallbackInfo& info);
  void Release();

  struct bpf_link* link_ = nullptr;
  std::string desc_;
};

}  // namespace ecnet
