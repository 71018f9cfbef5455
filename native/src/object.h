// Object: owns a struct bpf_object (its programs and the object's map fds).
#pragma once

#include "common.h"

namespace ecnet {

class Object : public Napi::ObjectWrap<Object> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Wraps `obj` (ownership moves to the JS object, even when this throws).
  static Napi::Object Create(Napi::Env env, struct bpf_object* obj, const std::string& path);

  explicit Object(const Napi::CallbackInfo& info);
  ~Object() override;

 private:
  Napi::Value Programs(const Napi::CallbackInfo& info);
  Napi::Value Maps(const Napi::CallbackInfo& info);
  void SetMaxEntries(const Napi::CallbackInfo& info);
  void SetInitialValue(const Napi::CallbackInfo& info);
  void Load(const Napi::CallbackInfo& info);
  Napi::Value ProgramInfo(const Napi::CallbackInfo& info);
  Napi::Value AttachCgroup(const Napi::CallbackInfo& info);
  void UpdateLink(const Napi::CallbackInfo& info);
  void Close(const Napi::CallbackInfo& info);

  struct bpf_object* Need(Napi::Env env, const std::string& op) const;
  struct bpf_map* FindMap(Napi::Env env, const std::string& name, const std::string& op) const;
  struct bpf_program* FindProgram(Napi::Env env, const std::string& name, const std::string& op) const;

  struct bpf_object* obj_ = nullptr;
  std::string path_;
};

}  // namespace ecnet
