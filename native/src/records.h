// Sealed records: the encrypted framing of a tunnel's bytes once its TLS handshake (in Node) has authenticated
// both clusters. Each direction has its own 32-byte secret, exported from the TLS session (RFC 5705/8446
// exporter), from which AES-128-GCM keys are derived; the splicer's thread seals and opens records with the
// OpenSSL that Node exports to addons, so a tunnel's bytes never cross into JavaScript.
//
// A record: a 4-byte header (type, 24-bit big-endian length of what follows) then the ciphertext and its
// 16-byte tag; the header is the associated data. The nonce is the direction's IV XOR the record's sequence
// number (as in TLS 1.3). Every `rekeyRecords` records both ends ratchet the direction's secret forward
// (secret' = Expand(secret, "upd")) and start again at sequence 0: no message, no state to agree on.
// docs/contracts.md has the whole contract.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ecnet {

constexpr size_t kRecordHeader = 4;
constexpr size_t kRecordTag = 16;
constexpr size_t kRecordSecret = 32;
// The largest plaintext one record carries.
constexpr size_t kRecordMaxPlain = 64 * 1024;
constexpr uint8_t kRecordData = 0x17;
// The sender's stream ended (half-close): the only end that is not a cut. Its plaintext is empty.
constexpr uint8_t kRecordEnd = 0x15;
// Keys last this many records unless told otherwise: 2^20 records of at most 64 KiB is 64 GiB per key,
// far inside AES-GCM's limits.
constexpr uint64_t kRecordRekeyDefault = uint64_t{1} << 20;

// One direction's AEAD state. Not thread-safe: it belongs to one pair on the splicer's thread.
class RecordCipher {
 public:
  RecordCipher(const uint8_t secret[kRecordSecret], bool seal, uint64_t rekeyRecords);
  ~RecordCipher();
  RecordCipher(const RecordCipher&) = delete;
  RecordCipher& operator=(const RecordCipher&) = delete;

  // False when OpenSSL could not set the cipher up; nothing else works then.
  bool ok() const { return ctx_ != nullptr; }
  // The state another process needs to go on where this one stops (a hand-over between agents): the current
  // secret, the next sequence number and the key update interval. Resume() takes them on a new cipher.
  void Export(uint8_t secret[kRecordSecret], uint64_t& seq, uint64_t& rekey) const;
  void Resume(uint64_t seq) { seq_ = seq; }
  // Writes one record of `type` carrying p[0..n) (n <= kRecordMaxPlain) to dst, which has room for
  // n + kRecordHeader + kRecordTag bytes; returns its size, 0 on a cipher failure. In place when
  // p == dst + kRecordHeader.
  size_t Seal(uint8_t type, const uint8_t* p, size_t n, uint8_t* dst);
  // The record's total size once its header is in `buf` (0 when fewer than kRecordHeader bytes), or -1 when
  // the header is not one this end accepts (unknown type, a length out of bounds).
  static long RecordSize(const uint8_t* buf, size_t n);
  // Opens the whole record rec[0..size): writes its plaintext (size - kRecordHeader - kRecordTag bytes) to
  // dst, sets `type`. False when it does not authenticate (a forged, reordered or corrupted record). In place
  // when dst == rec + kRecordHeader.
  bool Open(const uint8_t* rec, size_t size, uint8_t* dst, uint8_t& type);

 private:
  bool Derive();
  void Next();

  void* ctx_ = nullptr;  // EVP_CIPHER_CTX
  bool seal_;
  uint8_t secret_[kRecordSecret];
  uint8_t iv_[12];
  uint64_t seq_ = 0;
  uint64_t rekey_;
};

}  // namespace ecnet
