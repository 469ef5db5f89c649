#include "controlplane/credential_cipher.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "controlplane/ids.h"

namespace controlplane {
namespace {

constexpr int kNonceBytes = 12;
constexpr int kTagBytes = 16;

struct CtxDeleter {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CtxPtr = std::unique_ptr<EVP_CIPHER_CTX, CtxDeleter>;

const unsigned char* U(absl::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

absl::Status IoError(const std::string& what, const std::string& path) {
  return absl::InternalError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

}  // namespace

CredentialCipher::~CredentialCipher() { OPENSSL_cleanse(&key_[0], key_.size()); }

absl::StatusOr<std::unique_ptr<CredentialCipher>> CredentialCipher::Create(
    absl::string_view key) {
  if (key.size() != kKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("credential key must be ", kKeyBytes, " bytes, got ", key.size()));
  }
  return std::unique_ptr<CredentialCipher>(new CredentialCipher(key));
}

absl::StatusOr<std::unique_ptr<CredentialCipher>> CredentialCipher::FromKeyFile(
    const std::string& path) {
  // O_EXCL: two processes racing to create the key never both win.
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0) {
    std::string key = RandomBytes(kKeyBytes);
    bool ok = write(fd, key.data(), key.size()) == static_cast<ssize_t>(key.size()) &&
              fsync(fd) == 0;
    close(fd);
    if (!ok) {
      unlink(path.c_str());
      return IoError("cannot write credential key file", path);
    }
    return Create(key);
  }
  if (errno != EEXIST) return IoError("cannot create credential key file", path);
  fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return IoError("cannot open credential key file", path);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    close(fd);
    return IoError("cannot stat credential key file", path);
  }
  if ((st.st_mode & 077) != 0) {
    close(fd);
    return absl::FailedPreconditionError(absl::StrCat(
        "credential key file ", path, " is readable by others; chmod 600 it"));
  }
  std::string key(kKeyBytes + 1, '\0');
  ssize_t n = read(fd, &key[0], key.size());
  close(fd);
  if (n != static_cast<ssize_t>(kKeyBytes)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "credential key file ", path, " must hold exactly ", kKeyBytes, " bytes"));
  }
  key.resize(kKeyBytes);
  auto cipher = Create(key);
  OPENSSL_cleanse(&key[0], key.size());
  return cipher;
}

absl::StatusOr<std::string> CredentialCipher::Encrypt(absl::string_view plaintext,
                                                      absl::string_view context) const {
  CtxPtr ctx(EVP_CIPHER_CTX_new());
  std::string out = RandomBytes(kNonceBytes);
  out.resize(kNonceBytes + plaintext.size() + kTagBytes);
  unsigned char* cipher_text = reinterpret_cast<unsigned char*>(&out[kNonceBytes]);
  int len = 0;
  int total = 0;
  if (!ctx ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, U(key_), U(out)) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &len, U(context), static_cast<int>(context.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), cipher_text, &len, U(plaintext),
                        static_cast<int>(plaintext.size())) != 1) {
    return absl::InternalError("AES-256-GCM encryption failed");
  }
  total = len;
  if (EVP_EncryptFinal_ex(ctx.get(), cipher_text + total, &len) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes,
                          cipher_text + total + len) != 1) {
    return absl::InternalError("AES-256-GCM encryption failed");
  }
  return out;
}

absl::StatusOr<std::string> CredentialCipher::Decrypt(absl::string_view ciphertext,
                                                      absl::string_view context) const {
  if (ciphertext.size() < kNonceBytes + kTagBytes) {
    return absl::DataLossError("stored credential is truncated");
  }
  absl::string_view nonce = ciphertext.substr(0, kNonceBytes);
  absl::string_view body =
      ciphertext.substr(kNonceBytes, ciphertext.size() - kNonceBytes - kTagBytes);
  std::string tag(ciphertext.substr(ciphertext.size() - kTagBytes));
  std::string out(body.size(), '\0');
  CtxPtr ctx(EVP_CIPHER_CTX_new());
  int len = 0;
  if (!ctx ||
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, U(key_), U(nonce)) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &len, U(context), static_cast<int>(context.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(&out[0]), &len, U(body),
                        static_cast<int>(body.size())) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, &tag[0]) != 1) {
    return absl::DataLossError("stored credential cannot be decrypted");
  }
  int final_len = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(&out[0]) + len,
                          &final_len) != 1) {
    OPENSSL_cleanse(&out[0], out.size());
    return absl::DataLossError(
        "stored credential failed authentication (altered, or another key file)");
  }
  return out;
}

namespace {
std::string HmacSha256(absl::string_view key, absl::string_view data) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
       reinterpret_cast<const unsigned char*>(data.data()), data.size(), out, &length);
  return std::string(reinterpret_cast<const char*>(out), length);
}
}  // namespace

// A key of its own for the digests: the encryption key is never used for
// anything but AES-GCM.
CredentialCipher::CredentialCipher(absl::string_view key)
    : key_(key), digest_key_(HmacSha256(key, "imagetemplates keyed digest v1")) {}

std::string CredentialCipher::KeyedDigest(absl::string_view data) const {
  return HmacSha256(digest_key_, data);
}

std::string ServerCredentialContext(absl::string_view server_id, int position) {
  return absl::StrCat("server-credential/", server_id, "/", position);
}

std::string TemplateCredentialContext(absl::string_view template_id, int position) {
  return absl::StrCat("template-credential/", template_id, "/", position);
}

}  // namespace controlplane
