// The front's two halves (front.h): the JS-thread methods that start it and push its tables, and the thread
// side, which runs inside the splicer's loop (Splicer::Run hands it the events and timers it owns).
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <ctime>

#include "ecnet.h"
#include "splicer.h"

namespace ecnet {

namespace {

// Epoll keys of the front: pair ids count up from 1 and never reach these bits.
constexpr uint64_t kListenTag = 1ull << 62;
constexpr uint64_t kSetupTag = 1ull << 61;
// A request head or a gateway's answer larger than this is not the front's to parse.
constexpr size_t kHeadMax = 8192;
constexpr size_t kAcceptsPerTurn = 64;
constexpr const char kEstablished[] = "HTTP/1.1 200 Connection Established\r\n\r\n";

uint64_t MonoNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// An address as the datapath keeps it: 16 bytes, IPv4 mapped (::ffff:a.b.c.d). Port in network order.
bool Mapped(const sockaddr_storage& ss, uint8_t out[16], uint16_t* port) {
  if (ss.ss_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    std::memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    std::memcpy(out + 12, &in->sin_addr, 4);
    if (port) *port = in->sin_port;
    return true;
  }
  if (ss.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    std::memcpy(out, &in6->sin6_addr, 16);
    if (port) *port = in6->sin6_port;
    return true;
  }
  return false;
}

void ResetFd(int& fd) {
  if (fd < 0) return;
  struct linger l = {1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  close(fd);
  fd = -1;
}

bool TokenChar(unsigned char c) {
  return std::isalnum(c) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}

// The authority of a well-formed `CONNECT <authority> HTTP/1.1` head whose header lines are all well-formed and
// carry no body framing; empty when it is anything else (JavaScript's HTTP server then judges it).
std::string ConnectAuthority(const char* p, size_t headLen, bool lineOnly = false) {
  const char* end = p + headLen;  // just past the head's last line break
  const char* eol = static_cast<const char*>(memmem(p, headLen, "\r\n", 2));
  if (!eol) return {};
  std::string line(p, eol);
  const std::string verb = "CONNECT ", version = " HTTP/1.1";
  if (line.size() <= verb.size() + version.size() || line.compare(0, verb.size(), verb) != 0 ||
      line.compare(line.size() - version.size(), version.size(), version) != 0)
    return {};
  std::string authority = line.substr(verb.size(), line.size() - verb.size() - version.size());
  if (authority.empty() || authority.size() > 300) return {};
  for (char& c : authority) {
    auto u = static_cast<unsigned char>(c);
    if (!(std::isalnum(u) || c == '.' || c == '-' || c == ':')) return {};
    c = static_cast<char>(std::tolower(u));
  }
  if (lineOnly) return authority;  // the request line alone (a head still coming in)
  int lines = 0;
  for (const char* at = eol + 2; at < end - 2;) {
    const char* next = static_cast<const char*>(memmem(at, static_cast<size_t>(end - at), "\r\n", 2));
    if (!next || ++lines > 100) return {};
    const char* colon = static_cast<const char*>(std::memchr(at, ':', static_cast<size_t>(next - at)));
    if (!colon || colon == at) return {};
    for (const char* c = at; c < colon; c++)
      if (!TokenChar(static_cast<unsigned char>(*c))) return {};
    for (const char* c = colon + 1; c < next; c++) {
      auto u = static_cast<unsigned char>(*c);
      if (u != '\t' && (u < 0x20 || u == 0x7f)) return {};
    }
    std::string name(at, colon);
    for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (name == "content-length" || name == "transfer-encoding") return {};
    at = next + 2;
  }
  return authority;
}

// The status of an HTTP/1.x answer's status line; 0 when it is not one.
int StatusOf(const std::string& head) {
  if (head.size() < 12 || head.compare(0, 7, "HTTP/1.") != 0 || !std::isdigit(static_cast<unsigned char>(head[7])) ||
      head[8] != ' ')
    return 0;
  int status = 0;
  for (int i = 9; i < 12; i++) {
    if (!std::isdigit(static_cast<unsigned char>(head[i]))) return 0;
    status = status * 10 + (head[i] - '0');
  }
  if (head.size() > 12 && head[12] != ' ' && head[12] != '\r') return 0;
  return status;
}

// Smooth weighted round robin: over any window the choices follow their weights closely.
size_t Pick(FrontRoute& r) {
  if (r.choices.size() == 1) return 0;
  size_t best = 0;
  for (size_t i = 0; i < r.choices.size(); i++) {
    FrontChoice& c = r.choices[i];
    c.current += c.weight;
    if (c.current > r.choices[best].current) best = i;
  }
  r.choices[best].current -= r.total;
  return best;
}

uint32_t OptU32(Napi::Object o, const char* name, uint32_t dflt) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  if (!v.IsNumber()) ThrowErrno(o.Env(), "front_start", EINVAL, std::string(name) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 4294967295.0)) ThrowErrno(o.Env(), "front_start", EINVAL, std::string(name) + " is out of range");
  return static_cast<uint32_t>(d);
}

std::string BytesOf(Napi::Value v) {
  if (v.IsBuffer()) {
    auto b = v.As<Napi::Buffer<char>>();
    return std::string(b.Data(), b.Length());
  }
  if (v.IsString()) return v.As<Napi::String>().Utf8Value();
  return {};
}

bool AddressOf(Napi::Env env, Napi::Value v, sockaddr_storage& out) {
  if (!v.IsObject()) return false;
  Napi::Object o = v.As<Napi::Object>();
  std::string ip = o.Get("ip").IsString() ? o.Get("ip").As<Napi::String>().Utf8Value() : "";
  double port = o.Get("port").IsNumber() ? o.Get("port").As<Napi::Number>().DoubleValue() : -1;
  if (!(port >= 1 && port <= 65535)) return false;
  std::memset(&out, 0, sizeof(out));
  auto* in = reinterpret_cast<sockaddr_in*>(&out);
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&out);
  if (inet_pton(AF_INET, ip.c_str(), &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(static_cast<uint16_t>(port));
    return true;
  }
  std::memset(&out, 0, sizeof(out));
  if (inet_pton(AF_INET6, ip.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(static_cast<uint16_t>(port));
    return true;
  }
  (void)env;
  return false;
}

}  // namespace

FrontSetup::~FrontSetup() {
  CloseFd(up);
  CloseFd(client);
}

Front::~Front() {
  // Connections still being set up are cut (a reset, as any failed setup), not ended.
  for (auto& [key, s] : setups) {
    ResetFd(s->up);
    ResetFd(s->client);
  }
  setups.clear();
  for (int& fd : cfg.listeners) CloseFd(fd);
  CloseFd(cfg.connMap);
}

// ---- JS thread ----

void Splicer::FrontStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "front_start";
  if (closed_) ThrowErrno(env, op, EBADF, "splicer is closed");
  if (frontStarted_) ThrowErrno(env, op, EALREADY, "the front is already started");
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) ThrowErrno(env, op, EINVAL, "arguments: options, report");
  Napi::Object o = info[0].As<Napi::Object>();
  auto front = std::make_unique<Front>();
  FrontConfig& c = front->cfg;
  c.gateway = o.Get("gateway").ToBoolean();
  c.mark = OptU32(o, "mark", 0);
  c.idleMs = OptU32(o, "idleMs", 0);
  c.setupMs = OptU32(o, "setupMs", 5000);
  c.connectMs = OptU32(o, "connectMs", 2000);
  c.headerMs = OptU32(o, "headerMs", 5000);
  c.maxTotal = OptU32(o, "maxTotal", 0);
  c.maxPerSource = OptU32(o, "maxPerSource", 0);
  c.connValueSize = OptU32(o, "connValueSize", 24);
  c.staleNs = static_cast<uint64_t>(OptU32(o, "staleMs", 0)) * 1000000ull;
  Napi::Value off = o.Get("clockOffsetNs");
  if (off.IsNumber()) c.clockOffsetNs = static_cast<int64_t>(off.As<Napi::Number>().DoubleValue());
  if (c.connValueSize < sizeof(ecnet_origdst) || c.connValueSize > 256) ThrowErrno(env, op, EINVAL, "connValueSize must be 24..256");
  auto dupOf = [&](Napi::Value v, const char* what) {
    if (!v.IsNumber()) ThrowErrno(env, op, EINVAL, std::string(what) + " must be a descriptor");
    int fd = fcntl(v.As<Napi::Number>().Int32Value(), F_DUPFD_CLOEXEC, 0);
    if (fd < 0) ThrowErrno(env, op + " dup", errno, what);
    return fd;
  };
  Napi::Value ls = o.Get("listeners");
  if (!ls.IsArray() || ls.As<Napi::Array>().Length() == 0) ThrowErrno(env, op, EINVAL, "listeners must be descriptors");
  for (uint32_t i = 0; i < ls.As<Napi::Array>().Length(); i++) {
    int fd = dupOf(ls.As<Napi::Array>().Get(i), "listener");
    c.listeners.push_back(fd);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) ThrowErrno(env, op + " fcntl", errno);
  }
  if (!c.gateway) c.connMap = dupOf(o.Get("connMap"), "connMap");
  std::shared_ptr<FrontOutbox> out = frontOut_;
  frontTsfn_ = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "ecnet front", 0, 1);
  frontTsfn_.Unref(env);
  frontStarted_ = true;
  {
    std::lock_guard<std::mutex> lock(mu_);
    frontIn_.start = std::move(front);
  }
  Wake();
}

// entries: [{key: Buffer | string, choices: [{report, weight, addrs: [{ip, port}], head?}] | null}]; all: the
// entries are the whole table (what is not among them is removed).
void Splicer::FrontRoutes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "front_routes";
  if (info.Length() < 1 || !info[0].IsArray()) ThrowErrno(env, op, EINVAL, "entries must be an array");
  Napi::Array entries = info[0].As<Napi::Array>();
  bool all = info.Length() > 1 && info[1].ToBoolean();
  std::vector<std::pair<std::string, std::unique_ptr<FrontRoute>>> parsed;
  parsed.reserve(entries.Length());
  for (uint32_t i = 0; i < entries.Length(); i++) {
    Napi::Value ev = entries.Get(i);
    if (!ev.IsObject()) ThrowErrno(env, op, EINVAL, "an entry must be an object");
    Napi::Object e = ev.As<Napi::Object>();
    std::string key = BytesOf(e.Get("key"));
    if (key.empty()) ThrowErrno(env, op, EINVAL, "an entry needs a key");
    Napi::Value cv = e.Get("choices");
    if (!cv.IsArray()) {
      parsed.emplace_back(std::move(key), nullptr);
      continue;
    }
    auto route = std::make_unique<FrontRoute>();
    Napi::Array cs = cv.As<Napi::Array>();
    for (uint32_t j = 0; j < cs.Length(); j++) {
      Napi::Value chv = cs.Get(j);
      if (!chv.IsObject()) ThrowErrno(env, op, EINVAL, "a choice must be an object");
      Napi::Object ch = chv.As<Napi::Object>();
      FrontChoice c;
      double report = ch.Get("report").IsNumber() ? ch.Get("report").As<Napi::Number>().DoubleValue() : -1;
      if (!(report >= -1 && report <= kMaxTag) || report != std::floor(report))
        ThrowErrno(env, op, EINVAL, "a report index must be an integer -1.." + std::to_string(kMaxTag));
      c.report = static_cast<int32_t>(report);
      if (c.report >= 0) c.tag = tags_.At(static_cast<uint32_t>(c.report));
      double w = ch.Get("weight").IsNumber() ? ch.Get("weight").As<Napi::Number>().DoubleValue() : 1;
      if (!(w >= 1 && w <= 2147483647.0)) ThrowErrno(env, op, EINVAL, "a weight must be 1..2^31-1");
      c.weight = static_cast<uint32_t>(w);
      c.head = BytesOf(ch.Get("head"));
      Napi::Value av = ch.Get("addrs");
      if (!av.IsArray() || av.As<Napi::Array>().Length() == 0) ThrowErrno(env, op, EINVAL, "a choice needs addresses");
      auto addrs = std::make_shared<std::vector<sockaddr_storage>>();
      for (uint32_t k = 0; k < av.As<Napi::Array>().Length(); k++) {
        sockaddr_storage ss;
        if (!AddressOf(env, av.As<Napi::Array>().Get(k), ss)) ThrowErrno(env, op, EINVAL, "an address must be {ip, port}");
        addrs->push_back(ss);
      }
      c.addrs = std::move(addrs);
      route->total += c.weight;
      route->choices.push_back(std::move(c));
    }
    if (route->choices.empty()) ThrowErrno(env, op, EINVAL, "a route needs a choice (or null to remove it)");
    parsed.emplace_back(std::move(key), std::move(route));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (all) {
      frontIn_.routes.clear();
      frontIn_.replaceAll = true;
    }
    for (auto& p : parsed) frontIn_.routes.push_back(std::move(p));
  }
  Wake();
}

void Splicer::FrontPause(const Napi::CallbackInfo& info) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    bool stop = info.Length() > 0 && info[0].ToBoolean();
    bool shut = stop && info.Length() > 1 && info[1].ToBoolean();
    frontIn_.pause = shut ? 3 : stop ? 1 : 2;
  }
  Wake();
}

void Splicer::FrontRelease(const Napi::CallbackInfo& info) {
  std::string source = info.Length() > 0 ? BytesOf(info[0]) : std::string();
  if (source.size() != 16) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    frontIn_.released.push_back(std::move(source));
  }
  Wake();
}

Napi::Value Splicer::FrontStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const FrontCounters& c = *frontCounters_;
  Napi::Object o = Napi::Object::New(env);
  o.Set("accepted", static_cast<double>(c.accepted.load()));
  o.Set("notRedirected", static_cast<double>(c.notRedirected.load()));
  o.Set("limited", static_cast<double>(c.limited.load()));
  o.Set("spliced", static_cast<double>(c.spliced.load()));
  o.Set("handed", static_cast<double>(c.handed.load()));
  o.Set("failures", static_cast<double>(c.failures.load()));
  o.Set("failuresDropped", static_cast<double>(c.failuresDropped.load()));
  o.Set("setups", static_cast<double>(c.setups.load()));
  o.Set("open", static_cast<double>(c.open.load()));
  return o;
}

// ---- the splicer's thread ----

void Splicer::FrontCommands(FrontInbox& in) {
  if (in.start && !front_) {
    front_ = std::move(in.start);
    FrontListen(true);
  }
  if (!front_) return;
  if (in.replaceAll) {
    front_->routes.clear();
    front_->ready = true;
  }
  for (auto& [key, route] : in.routes) {
    if (route)
      front_->routes[key] = std::move(*route);
    else
      front_->routes.erase(key);
  }
  if (in.pause == 3) {
    // Closed for good (the component drains): new connections are refused by the kernel, not left queued.
    FrontListen(false);
    front_->paused = true;
    for (int& fd : front_->cfg.listeners) CloseFd(fd);
  } else if (in.pause == 1 && !front_->paused) {
    front_->paused = true;
    FrontListen(false);
  } else if (in.pause == 2 && front_->paused && !front_->cfg.listeners.empty() && front_->cfg.listeners[0] >= 0) {
    front_->paused = false;
    FrontListen(true);
  }
  for (const std::string& s : in.released) FrontFreeSlot(s);
}

void Splicer::FrontListen(bool on) {
  for (size_t i = 0; i < front_->cfg.listeners.size(); i++) {
    int fd = front_->cfg.listeners[i];
    if (fd < 0) continue;
    if (!on) {
      epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
      continue;
    }
    struct epoll_event ev = {};
    ev.events = EPOLLIN;
    ev.data.u64 = kListenTag | i;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) < 0 && errno == EEXIST) epoll_ctl(epfd_, EPOLL_CTL_MOD, fd, &ev);
  }
}

bool Splicer::FrontIsKey(uint64_t key) { return (key & (kListenTag | kSetupTag)) != 0; }

void Splicer::FrontOnEvent(uint64_t key, uint32_t events) {
  if (!front_) return;
  if (key & kListenTag) {
    size_t i = key & ~kListenTag;
    if (i < front_->cfg.listeners.size() && !front_->paused) FrontAccept(front_->cfg.listeners[i]);
    return;
  }
  auto it = front_->setups.find(key);
  if (it == front_->setups.end()) return;
  FrontSetup& s = *it->second;
  switch (s.stage) {
    case FrontSetup::Stage::kHead:
      return FrontPeekHead(s);
    case FrontSetup::Stage::kConnect: {
      int err = SocketError(s.up);
      if (!err && (events & (EPOLLERR | EPOLLHUP))) err = ECONNRESET;
      if (err) return FrontUpFailed(s, err, 0);
      if (!(events & EPOLLOUT)) return;
      if (s.head.empty()) return FrontEstablished(s, {});
      s.stage = FrontSetup::Stage::kSend;
      [[fallthrough]];
    }
    case FrontSetup::Stage::kSend: {
      while (s.sent < s.head.size()) {
        ssize_t n = send(s.up, s.head.data() + s.sent, s.head.size() - s.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK) return;
          if (errno == EINTR) continue;
          return FrontUpFailed(s, errno, 0);
        }
        s.sent += static_cast<size_t>(n);
      }
      s.stage = FrontSetup::Stage::kAwait;
      struct epoll_event ev = {};
      ev.events = EPOLLIN | EPOLLRDHUP;
      ev.data.u64 = s.key;
      if (epoll_ctl(epfd_, EPOLL_CTL_MOD, s.up, &ev) < 0) return FrontUpFailed(s, errno, 0);
      return;
    }
    case FrontSetup::Stage::kAwait: {
      for (;;) {
        char buf[kHeadMax];
        size_t room = kHeadMax - s.buf.size();
        ssize_t n = recv(s.up, buf, room, MSG_DONTWAIT);
        if (n == 0) return FrontUpFailed(s, ECONNRESET, 0);  // closed before it answered
        if (n < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK) return;
          return FrontUpFailed(s, errno, 0);
        }
        s.buf.append(buf, static_cast<size_t>(n));
        size_t end = s.buf.find("\r\n\r\n");
        if (end == std::string::npos) {
          if (s.buf.size() >= kHeadMax) return FrontUpFailed(s, EPROTO, 0);
          continue;
        }
        int status = StatusOf(s.buf);
        if (status != 200) return FrontUpFailed(s, status ? 0 : EPROTO, status);
        return FrontEstablished(s, s.buf.substr(end + 4));
      }
    }
  }
}

void Splicer::FrontAccept(int listener) {
  for (size_t i = 0; i < kAcceptsPerTurn; i++) {
    sockaddr_storage peer;
    socklen_t len = sizeof(peer);
    int fd = accept4(listener, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of descriptors: the backlog waits a moment rather than the loop spinning on it.
        FrontListen(false);
        front_->retryListenAt = NowMs() + 100;
      }
      return;
    }
    frontCounters_->accepted++;
    // As the servers did (noDelay): a request/response protocol must not wait on Nagle and delayed ACKs.
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uint8_t src[16];
    if (!Mapped(peer, src, nullptr)) {
      close(fd);
      continue;
    }
    // One source is an IPv4 address or an IPv6 /64 (one host may hold a whole /64), as ConnectionLimiter counts.
    bool v4 = std::all_of(src, src + 10, [](uint8_t b) { return b == 0; }) && src[10] == 0xff && src[11] == 0xff;
    if (!v4) std::memset(src + 8, 0, 8);
    std::string source(reinterpret_cast<char*>(src), 16);
    const FrontConfig& c = front_->cfg;
    uint32_t& mine = front_->bySource[source];
    if ((c.maxTotal && frontCounters_->open >= c.maxTotal) || (c.maxPerSource && mine >= c.maxPerSource)) {
      if (mine == 0) front_->bySource.erase(source);
      frontCounters_->limited++;
      ResetFd(fd);
      continue;
    }
    mine++;
    frontCounters_->open++;
    frontCounters_->setups++;
    auto s = std::make_unique<FrontSetup>();
    s->client = fd;
    s->source = std::move(source);
    s->key = kSetupTag | front_->nextSetup++;
    s->accepted = NowMs();
    s->acceptedNs = MonoNs();
    FrontClassify(std::move(s), peer);
  }
}

// Where an accepted connection goes: the proxy knows at once (the connection map); the gateway once the head is in.
// `peer` is accept's: the connection map's key needs only the local address asked of the kernel.
void Splicer::FrontClassify(std::unique_ptr<FrontSetup> owned, const sockaddr_storage& peer) {
  FrontSetup& s = *owned;
  uint64_t key = s.key;
  front_->setups.emplace(key, std::move(owned));
  const FrontConfig& c = front_->cfg;
  if (c.gateway) {
    s.stage = FrontSetup::Stage::kHead;
    s.deadline = NowMs() + c.headerMs;
    front_->Due(s.deadline);
    struct epoll_event ev = {};
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = key;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, s.client, &ev) < 0) return FrontHand(s);
    s.clientPolled = true;
    return;  // the add reports a head already there
  }
  sockaddr_storage local;
  socklen_t ll = sizeof(local);
  // struct ecnet_conn_key: client address, proxy address, client port, proxy port.
  uint8_t k[sizeof(ecnet_conn_key)];
  uint16_t cport = 0, pport = 0;
  if (getsockname(s.client, reinterpret_cast<sockaddr*>(&local), &ll) < 0 || !Mapped(peer, k, &cport) ||
      !Mapped(local, k + 16, &pport)) {
    frontCounters_->notRedirected++;
    return FrontDrop(key);  // reset before we looked
  }
  std::memcpy(k + offsetof(ecnet_conn_key, client_port), &cport, 2);
  std::memcpy(k + offsetof(ecnet_conn_key, proxy_port), &pport, 2);
  uint8_t v[256];
  // Atomic where the kernel has it for hash maps (5.14), else in two steps, as the JavaScript path does.
  bool found = bpf_map_lookup_and_delete_elem(c.connMap, k, v) == 0;
  if (!found && errno != ENOENT && bpf_map_lookup_elem(c.connMap, k, v) == 0) {
    found = true;
    bpf_map_delete_elem(c.connMap, k);
  }
  if (!found) {
    frontCounters_->notRedirected++;
    return FrontDrop(key);
  }
  // The record's time (ecnet_conn_dst.recorded_ns, after the 24 bytes of ecnet_origdst): an old one is not
  // this connection's (a 4-tuple reused after a record nobody took).
  if (c.staleNs && c.connValueSize >= sizeof(ecnet_conn_dst)) {
    uint64_t at;
    std::memcpy(&at, v + offsetof(ecnet_conn_dst, recorded_ns), sizeof(at));
    uint64_t now = MonoNs() - static_cast<uint64_t>(c.clockOffsetNs);
    if (now > at && now - at > c.staleNs) {
      frontCounters_->notRedirected++;
      return FrontDrop(key);
    }
  }
  // The table's key: the original destination's address and port (ecnet_origdst up to `proto`).
  s.destination.assign(reinterpret_cast<char*>(v), sizeof(ecnet_origdst));
  s.routeKey.assign(reinterpret_cast<char*>(v), offsetof(ecnet_origdst, proto));
  auto it = front_->ready ? front_->routes.find(s.routeKey) : front_->routes.end();
  if (it == front_->routes.end()) return FrontHand(s);
  FrontChoose(s, it->second);
}

// One of the route's choices, by weight, and its next address first: the setup keeps a copy (the table may
// change while it connects).
void Splicer::FrontChoose(FrontSetup& s, FrontRoute& r) {
  FrontChoice& ch = r.choices[Pick(r)];
  s.report = ch.report;
  s.tag = ch.tag;
  s.addrs = ch.addrs;
  s.head = ch.head;
  s.start = ch.next++;
  FrontConnect(s);
}

void Splicer::FrontPeekHead(FrontSetup& s) {
  char buf[kHeadMax];
  ssize_t n = recv(s.client, buf, sizeof(buf), MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return FrontDrop(s.key);  // gone before a whole head
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
    return FrontDrop(s.key);
  }
  static constexpr char kVerb[] = "CONNECT ";
  size_t have = static_cast<size_t>(n);
  if (std::memcmp(buf, kVerb, std::min(have, sizeof(kVerb) - 1)) != 0) return FrontHand(s);
  const char* end = static_cast<const char*>(memmem(buf, have, "\r\n\r\n", 4));
  if (!end) {
    // Not the front's as soon as that is certain, so that Node's parser answers it without waiting: a line
    // break without its CR, or a request line that is complete and not a CONNECT the front could serve.
    if (have >= kHeadMax) return FrontHand(s);
    const char* lf = nullptr;  // the first line break
    for (size_t i = 0; i < have; i++) {
      if (buf[i] != '\n') continue;
      if (i == 0 || buf[i - 1] != '\r') return FrontHand(s);
      if (!lf) lf = buf + i;
    }
    if (lf && ConnectAuthority(buf, static_cast<size_t>(lf + 1 - buf), true).empty()) return FrontHand(s);
    return;  // more to come
  }
  size_t headLen = static_cast<size_t>(end - buf) + 4;
  std::string authority = ConnectAuthority(buf, headLen);
  auto it = authority.empty() ? front_->routes.end() : front_->routes.find(authority);
  if (it == front_->routes.end()) return FrontHand(s);
  epoll_ctl(epfd_, EPOLL_CTL_DEL, s.client, nullptr);
  s.clientPolled = false;
  s.headLen = headLen;
  FrontChoose(s, it->second);
}

void Splicer::FrontConnect(FrontSetup& s) {
  const sockaddr_storage& to = (*s.addrs)[(s.start + s.tried) % s.addrs->size()];
  s.tried++;
  s.sent = 0;
  s.buf.clear();
  s.up = socket(to.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s.up < 0) return FrontUpFailed(s, errno, 0, false);
  int one = 1;
  setsockopt(s.up, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  // The datapath must not send the node proxy's own connections back to it.
  if (front_->cfg.mark && setsockopt(s.up, SOL_SOCKET, SO_MARK, &front_->cfg.mark, sizeof(front_->cfg.mark)) < 0)
    return FrontUpFailed(s, errno, 0, false);
  socklen_t len = to.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  if (connect(s.up, reinterpret_cast<const sockaddr*>(&to), len) < 0 && errno != EINPROGRESS)
    return FrontUpFailed(s, errno, 0);
  s.stage = FrontSetup::Stage::kConnect;
  s.deadline = NowMs() + (s.head.empty() ? front_->cfg.connectMs : front_->cfg.setupMs);
  front_->Due(s.deadline);
  struct epoll_event ev = {};
  ev.events = EPOLLOUT | EPOLLIN | EPOLLRDHUP;
  ev.data.u64 = s.key;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, s.up, &ev) < 0) return FrontUpFailed(s, errno, 0, false);
}

void Splicer::FrontUpFailed(FrontSetup& s, int err, int status, bool endpoint) {
  if (s.up >= 0) epoll_ctl(epfd_, EPOLL_CTL_DEL, s.up, nullptr);
  ResetFd(s.up);
  frontCounters_->failures++;
  if (s.tag) TagCounters::Add(s.tag->failed, 1);
  if (front_->cfg.gateway && endpoint) {
    // The endpoint just tried (FrontConnect counted it in `tried`).
    const sockaddr_storage& to = (*s.addrs)[(s.start + s.tried - 1) % s.addrs->size()];
    std::lock_guard<std::mutex> lock(frontOut_->mu);
    if (frontOut_->failures.size() < FrontOutbox::kMaxFailures)
      frontOut_->failures.push_back(FrontEndpointFailure{s.report, to, err});
    else
      frontCounters_->failuresDropped++;
  }
  // Endpoints (the gateway's, the proxy's local ones) are tried in turn as JavaScript would; a gateway that
  // failed leaves the next candidate to the policy.
  if (s.head.empty() && err && s.tried < s.addrs->size()) return FrontConnect(s);
  FrontHand(s, s.report, err, status);
}

void Splicer::FrontEstablished(FrontSetup& s, std::string leftover) {
  epoll_ctl(epfd_, EPOLL_CTL_DEL, s.up, nullptr);
  if (front_->cfg.gateway) {
    // The head was only peeked: it is consumed now, and the endpoint's answer goes out before any byte of it.
    char buf[kHeadMax];
    ssize_t n = recv(s.client, buf, s.headLen, MSG_DONTWAIT);
    ssize_t w = n == static_cast<ssize_t>(s.headLen)
                    ? send(s.client, kEstablished, sizeof(kEstablished) - 1, MSG_NOSIGNAL | MSG_DONTWAIT)
                    : -1;
    if (w != static_cast<ssize_t>(sizeof(kEstablished) - 1)) {
      ResetFd(s.up);
      ResetFd(s.client);
      return FrontDrop(s.key);
    }
  }
  auto pair = std::make_unique<SplicePair>();
  pair->fd[0] = s.client;
  pair->fd[1] = s.up;
  s.client = s.up = -1;
  pair->dir[1].pending = std::move(leftover);  // what the endpoint sent right after the 200
  pair->idleMs = front_->cfg.idleMs;
  pair->fronted = true;
  pair->source = s.source;
  pair->SetTag(s.tag, s.report, false);  // fd[0] is the client
  if (s.tag) {
    TagCounters::Add(s.tag->opened, 1);
    s.tag->ObserveSetup((MonoNs() - s.acceptedNs) / 1000);
  }
  frontCounters_->spliced++;
  frontCounters_->setups--;
  {
    // Counted by report index (-1: a local endpoint, which has no cluster's health to mend).
    std::lock_guard<std::mutex> lock(frontOut_->mu);
    frontOut_->successes[s.report]++;
  }
  front_->setups.erase(s.key);  // s is gone from here on
  livePairs_++;
  pair->id = nextId_++;
  pair->dir[0].from = pair->dir[1].to = pair->fd[0];
  pair->dir[0].to = pair->dir[1].from = pair->fd[1];
  Insert(std::move(pair));
}

void Splicer::FrontHand(FrontSetup& s, int32_t failedReport, int err, int status) {
  if (s.clientPolled) epoll_ctl(epfd_, EPOLL_CTL_DEL, s.client, nullptr);
  if (s.up >= 0) epoll_ctl(epfd_, EPOLL_CTL_DEL, s.up, nullptr);
  ResetFd(s.up);
  FrontHanded h;
  h.fd = s.client;
  s.client = -1;
  h.source = s.source;
  h.destination = s.destination;
  h.failedReport = failedReport;
  h.failedErrno = err;
  h.failedStatus = status;
  h.ageMs = NowMs() - s.accepted;
  frontCounters_->handed++;
  frontCounters_->setups--;
  {
    std::lock_guard<std::mutex> lock(frontOut_->mu);
    frontOut_->handed.push_back(std::move(h));
  }
  front_->setups.erase(s.key);  // its slot stays held until JavaScript releases it
}

void Splicer::FrontDrop(uint64_t key) {
  auto it = front_->setups.find(key);
  if (it == front_->setups.end()) return;
  FrontSetup& s = *it->second;
  if (s.clientPolled) epoll_ctl(epfd_, EPOLL_CTL_DEL, s.client, nullptr);
  if (s.up >= 0) epoll_ctl(epfd_, EPOLL_CTL_DEL, s.up, nullptr);
  std::string source = s.source;
  frontCounters_->setups--;
  front_->setups.erase(it);  // closes its descriptors
  FrontFreeSlot(source);
}

void Splicer::FrontFreeSlot(const std::string& source) {
  if (!front_) return;
  auto it = front_->bySource.find(source);
  if (it == front_->bySource.end()) return;
  if (--it->second == 0) front_->bySource.erase(it);
  frontCounters_->open--;
}

// Setups past their deadline; returns how long the loop may wait for the next one (ms, -1: none).
int64_t Splicer::FrontTimers(int64_t now) {
  if (!front_) return -1;
  if (front_->retryListenAt && now >= front_->retryListenAt) {
    front_->retryListenAt = 0;
    if (!front_->paused) FrontListen(true);
  }
  front_->nextDeadline = 0;
  std::vector<uint64_t> late;
  int64_t next = -1;
  for (auto& [key, s] : front_->setups) {
    if (s->deadline <= now)
      late.push_back(key);
    else if (next < 0 || s->deadline - now < next)
      next = s->deadline - now;
  }
  for (uint64_t key : late) {
    auto it = front_->setups.find(key);
    if (it == front_->setups.end()) continue;
    FrontSetup& s = *it->second;
    // A head not complete in time: what came of it is read and dropped, and JavaScript answers 408 at once
    // (its HTTP server would wait its own header timeout again).
    if (s.stage == FrontSetup::Stage::kHead) {
      // Bounded: a sender that keeps the queue full must not hold the thread (JavaScript drops the rest).
      char drop[kHeadMax];
      for (int i = 0; i < 4 && recv(s.client, drop, sizeof(drop), MSG_DONTWAIT) > 0; i++) {
      }
      FrontHand(s, -1, ETIMEDOUT, 408);
    } else
      FrontUpFailed(s, ETIMEDOUT, 0);
  }
  if (front_->retryListenAt) next = next < 0 ? 100 : std::min<int64_t>(next, 100);
  return next;
}

// One call into JavaScript per batch: the connections handed over, the successes counted and (gateway) the
// endpoints that failed since the last.
void Splicer::FrontFlush() {
  if (!frontStarted_) return;
  std::shared_ptr<FrontOutbox> out = frontOut_;
  {
    std::lock_guard<std::mutex> lock(out->mu);
    if (out->queued || (out->handed.empty() && out->successes.empty() && out->failures.empty())) return;
    out->queued = true;
  }
  napi_status st = frontTsfn_.NonBlockingCall([out](Napi::Env env, Napi::Function cb) {
    std::vector<FrontHanded> handed;
    std::unordered_map<int32_t, uint32_t> successes;
    std::vector<FrontEndpointFailure> failures;
    {
      std::lock_guard<std::mutex> lock(out->mu);
      handed.swap(out->handed);
      successes.swap(out->successes);
      failures.swap(out->failures);
      out->queued = false;
    }
    if (static_cast<napi_env>(env) == nullptr || cb.IsEmpty()) {
      for (FrontHanded& h : handed) ResetFd(h.fd);  // the environment is going: nobody takes them
      return;
    }
    Napi::Array hs = Napi::Array::New(env, handed.size());
    for (size_t i = 0; i < handed.size(); i++) {
      const FrontHanded& h = handed[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("fd", h.fd);
      o.Set("source", BufferOf(env, reinterpret_cast<const uint8_t*>(h.source.data()), h.source.size()));
      o.Set("ageMs", static_cast<double>(h.ageMs));
      if (!h.destination.empty())
        o.Set("destination", BufferOf(env, reinterpret_cast<const uint8_t*>(h.destination.data()), h.destination.size()));
      if (h.failedReport != -2) {
        o.Set("failedReport", h.failedReport);
        o.Set("errno", h.failedErrno);
        o.Set("status", h.failedStatus);
      }
      hs.Set(static_cast<uint32_t>(i), o);
    }
    Napi::Array ss = Napi::Array::New(env);
    uint32_t k = 0;
    for (auto& [report, count] : successes) {
      Napi::Array pair = Napi::Array::New(env, 2);
      pair.Set(0u, report);
      pair.Set(1u, count);
      ss.Set(k++, pair);
    }
    // [report, ip, port, errno] each.
    Napi::Array fs = Napi::Array::New(env, failures.size());
    for (size_t i = 0; i < failures.size(); i++) {
      const FrontEndpointFailure& f = failures[i];
      char ip[INET6_ADDRSTRLEN] = "";
      uint16_t port = 0;
      if (f.addr.ss_family == AF_INET) {
        auto* in = reinterpret_cast<const sockaddr_in*>(&f.addr);
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        port = ntohs(in->sin_port);
      } else {
        auto* in6 = reinterpret_cast<const sockaddr_in6*>(&f.addr);
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        port = ntohs(in6->sin6_port);
      }
      Napi::Array e = Napi::Array::New(env, 4);
      e.Set(0u, f.report);
      e.Set(1u, ip);
      e.Set(2u, port);
      e.Set(3u, f.err);
      fs.Set(static_cast<uint32_t>(i), e);
    }
    try {
      cb.Call({hs, ss, fs});
    } catch (const Napi::Error& e) {
      // The callback owns the descriptors it was given; an exception is JavaScript's to see.
      try {
        e.ThrowAsJavaScriptException();
      } catch (...) {
      }
    }
  });
  if (st != napi_ok) {
    std::lock_guard<std::mutex> lock(out->mu);
    out->queued = false;
  }
}

}  // namespace ecnet
