#include "records.h"

#include <cstring>
#include <string>

// Node's own OpenSSL (its headers come with Node's, on the include path before the system's; its symbols are
// exported by the node binary, so the addon links against no libcrypto of its own).
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace ecnet {

namespace {

EVP_CIPHER_CTX* Ctx(void* p) { return static_cast<EVP_CIPHER_CTX*>(p); }

// HKDF-Expand with one block (every output here is at most 32 bytes): HMAC-SHA256(secret, label || 0x01).
bool Expand(const uint8_t secret[kRecordSecret], const char* label, uint8_t* out, size_t n) {
  std::string info = std::string("ecnet records ") + label;
  info.push_back('\x01');
  uint8_t block[32];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), secret, kRecordSecret, reinterpret_cast<const unsigned char*>(info.data()), info.size(),
            block, &len) ||
      len != sizeof(block))
    return false;
  std::memcpy(out, block, n);
  OPENSSL_cleanse(block, sizeof(block));
  return true;
}

}  // namespace

RecordCipher::RecordCipher(const uint8_t secret[kRecordSecret], bool seal, uint64_t rekeyRecords)
    : seal_(seal), rekey_(rekeyRecords ? rekeyRecords : kRecordRekeyDefault) {
  std::memcpy(secret_, secret, kRecordSecret);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  ctx_ = ctx;
  if (ctx && !Derive()) {
    EVP_CIPHER_CTX_free(ctx);
    ctx_ = nullptr;
  }
}

RecordCipher::~RecordCipher() {
  if (ctx_) EVP_CIPHER_CTX_free(Ctx(ctx_));
  OPENSSL_cleanse(secret_, sizeof(secret_));
  OPENSSL_cleanse(iv_, sizeof(iv_));
}

void RecordCipher::Export(uint8_t secret[kRecordSecret], uint64_t& seq, uint64_t& rekey) const {
  std::memcpy(secret, secret_, kRecordSecret);
  seq = seq_;
  rekey = rekey_;
}

// Keys and IV of the current secret, and the context set up with them.
bool RecordCipher::Derive() {
  uint8_t key[16];  // AES-128-GCM, as TLS_AES_128_GCM_SHA256: the faster of TLS 1.3's AES suites
  bool ok = Expand(secret_, "key", key, sizeof(key)) && Expand(secret_, "iv", iv_, sizeof(iv_));
  if (ok)
    ok = seal_ ? EVP_EncryptInit_ex(Ctx(ctx_), EVP_aes_128_gcm(), nullptr, key, nullptr) == 1
               : EVP_DecryptInit_ex(Ctx(ctx_), EVP_aes_128_gcm(), nullptr, key, nullptr) == 1;
  OPENSSL_cleanse(key, sizeof(key));
  seq_ = 0;
  return ok;
}

// After each record: the next sequence number, or the next secret when this key has had its share.
void RecordCipher::Next() {
  if (++seq_ < rekey_) return;
  uint8_t next[kRecordSecret];
  if (!Expand(secret_, "upd", next, sizeof(next)) || (std::memcpy(secret_, next, sizeof(next)), !Derive())) {
    // A failed ratchet leaves no usable key: every later record fails rather than reusing a nonce.
    EVP_CIPHER_CTX_free(Ctx(ctx_));
    ctx_ = nullptr;
  }
  OPENSSL_cleanse(next, sizeof(next));
}

size_t RecordCipher::Seal(uint8_t type, const uint8_t* p, size_t n, uint8_t* dst) {
  if (!ctx_ || n > kRecordMaxPlain) return 0;
  uint8_t nonce[12];
  std::memcpy(nonce, iv_, sizeof(nonce));
  for (int i = 0; i < 8; i++) nonce[4 + i] ^= static_cast<uint8_t>(seq_ >> (56 - 8 * i));
  size_t len = n + kRecordTag;
  dst[0] = type;
  dst[1] = static_cast<uint8_t>(len >> 16);
  dst[2] = static_cast<uint8_t>(len >> 8);
  dst[3] = static_cast<uint8_t>(len);
  int outl = 0;
  int fin = 0;
  EVP_CIPHER_CTX* ctx = Ctx(ctx_);
  bool ok = EVP_EncryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce) == 1 &&
            EVP_EncryptUpdate(ctx, nullptr, &outl, dst, kRecordHeader) == 1 &&
            (n == 0 || EVP_EncryptUpdate(ctx, dst + kRecordHeader, &outl, p, static_cast<int>(n)) == 1) &&
            EVP_EncryptFinal_ex(ctx, dst + kRecordHeader + n, &fin) == 1 &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kRecordTag, dst + kRecordHeader + n) == 1;
  if (!ok) return 0;
  Next();
  return kRecordHeader + len;
}

long RecordCipher::RecordSize(const uint8_t* buf, size_t n) {
  if (n < kRecordHeader) return 0;
  if (buf[0] != kRecordData && buf[0] != kRecordEnd) return -1;
  size_t len = (size_t{buf[1]} << 16) | (size_t{buf[2]} << 8) | buf[3];
  if (len < kRecordTag || len > kRecordMaxPlain + kRecordTag) return -1;
  if (buf[0] == kRecordEnd && len != kRecordTag) return -1;
  return static_cast<long>(kRecordHeader + len);
}

bool RecordCipher::Open(const uint8_t* rec, size_t size, uint8_t* dst, uint8_t& type) {
  if (!ctx_ || size < kRecordHeader + kRecordTag) return false;
  size_t n = size - kRecordHeader - kRecordTag;
  uint8_t nonce[12];
  std::memcpy(nonce, iv_, sizeof(nonce));
  for (int i = 0; i < 8; i++) nonce[4 + i] ^= static_cast<uint8_t>(seq_ >> (56 - 8 * i));
  uint8_t tag[kRecordTag];
  std::memcpy(tag, rec + kRecordHeader + n, kRecordTag);
  int outl = 0;
  int fin = 0;
  EVP_CIPHER_CTX* ctx = Ctx(ctx_);
  bool ok = EVP_DecryptInit_ex(ctx, nullptr, nullptr, nullptr, nonce) == 1 &&
            EVP_DecryptUpdate(ctx, nullptr, &outl, rec, kRecordHeader) == 1 &&
            (n == 0 || EVP_DecryptUpdate(ctx, dst, &outl, rec + kRecordHeader, static_cast<int>(n)) == 1) &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kRecordTag, tag) == 1 &&
            EVP_DecryptFinal_ex(ctx, dst + n, &fin) == 1;
  if (!ok) {
    // Nothing of a record that does not authenticate is passed on.
    OPENSSL_cleanse(dst, n);
    return false;
  }
  type = rec[0];
  Next();
  return true;
}

}  // namespace ecnet
