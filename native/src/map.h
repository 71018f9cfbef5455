// Map: owns a map fd (from a pin or a map id) and its cached bpf_map_info.
#pragma once

#include "common.h"

namespace ecnet {

class Map : public Napi::ObjectWrap<Map> {
 public:
  static Napi::Function Init(Napi::Env env);
  // Wraps `fd` (ownership moves to the JS object, even when this throws): checks that it is a map and reads
  // its info. `op` (how the fd was opened) names errors of that check.
  static Napi::Object Create(Napi::Env env, int fd, const std::string& op);

  explicit Map(const Napi::CallbackInfo& info);
  ~Map() override;

 private:
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Fd(const Napi::CallbackInfo& info);
  Napi::Value Lookup(const Napi::CallbackInfo& info);
  void Update(const Napi::CallbackInfo& info);
  Napi::Value Delete(const Napi::CallbackInfo& info);
  Napi::Value LookupAndDelete(const Napi::CallbackInfo& info);
  Napi::Value Entries(const Napi::CallbackInfo& info);
  Napi::Value UpdateBatch(const Napi::CallbackInfo& info);
  Napi::Value DeleteBatch(const Napi::CallbackInfo& info);
  void Close(const Napi::CallbackInfo& info);

  // "<verb> <map name>", for errors.
  std::string Op(const char* verb) const;
  // The open fd; throws EBADF when closed.
  int Need(Napi::Env env, const std::string& op) const;
  // Bytes of one value as the syscalls see it (per-CPU maps: round_up(value_size, 8) * possible CPUs).
  size_t ValueBytes(Napi::Env env, const std::string& op) const;
  bool EntriesByNextKey(Napi::Env env, int fd, size_t valueBytes, std::vector<uint8_t>& keys,
                        std::vector<uint8_t>& values, size_t& count);

  int fd_ = -1;
  struct bpf_map_info info_;
};

}  // namespace ecnet
