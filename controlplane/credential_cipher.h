// Encrypts secrets at rest (server software passwords, CHAP secrets) with
// AES-256-GCM. Each value gets a fresh random 96-bit nonce; the stored form is
// nonce || ciphertext || 16-byte tag. `context` (for example the server id and
// slot) is bound as associated data, so a ciphertext copied to another row
// does not decrypt.
#ifndef CONTROLPLANE_CREDENTIAL_CIPHER_H_
#define CONTROLPLANE_CREDENTIAL_CIPHER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace controlplane {

// Thread-safe (immutable after creation).
class CredentialCipher {
 public:
  static constexpr size_t kKeyBytes = 32;

  // From a raw 32-byte key. INVALID_ARGUMENT for another length.
  static absl::StatusOr<std::unique_ptr<CredentialCipher>> Create(absl::string_view key);

  // Reads the key file, first creating it with a random key (mode 0600) if it
  // does not exist. FAILED_PRECONDITION if it exists but does not hold exactly
  // 32 bytes or is readable by group/others; INTERNAL on I/O errors.
  static absl::StatusOr<std::unique_ptr<CredentialCipher>> FromKeyFile(const std::string& path);

  ~CredentialCipher();
  CredentialCipher(const CredentialCipher&) = delete;
  CredentialCipher& operator=(const CredentialCipher&) = delete;

  absl::StatusOr<std::string> Encrypt(absl::string_view plaintext,
                                      absl::string_view context) const;
  // DATA_LOSS if the value was altered, belongs to another context, or was
  // made with another key.
  absl::StatusOr<std::string> Decrypt(absl::string_view ciphertext,
                                      absl::string_view context) const;

  // HMAC-SHA256 of `data` under a key derived from this one: a stand-in for
  // a secret where equal secrets must compare equal (request fingerprints)
  // but a guess must not be checkable without the key.
  std::string KeyedDigest(absl::string_view data) const;

 private:
  explicit CredentialCipher(absl::string_view key);
  std::string key_;
  std::string digest_key_;  // KeyedDigest's, derived from key_
};

// The contexts of the stored credentials: a server's recorded ones, and the
// snapshot an image template keeps of its source server's (a row copied to
// another server, template or position does not decrypt).
std::string ServerCredentialContext(absl::string_view server_id, int position);
std::string TemplateCredentialContext(absl::string_view template_id, int position);

}  // namespace controlplane

#endif  // CONTROLPLANE_CREDENTIAL_CIPHER_H_
