#ifndef FERRY_AUTH_CERTIFICATES_H_
#define FERRY_AUTH_CERTIFICATES_H_

// Checks of TLS files before gRPC gets them, so that a wrong file is
// refused at start with a message that names it and says what is wrong,
// instead of every handshake failing later with a generic error.

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ferry {

struct CertificateInfo {
  std::string subject;  // "CN=ferry.internal,O=..."
  absl::Time not_before;
  absl::Time not_after;
};

// The certificate (first of the chain) at `cert_path` and the private key
// at `key_path`: both readable PEM, the key the certificate's, and the
// certificate valid at `now`. INVALID_ARGUMENT naming the file otherwise
// ("server.crt expired on 2026-01-01T00:00:00Z").
absl::StatusOr<CertificateInfo> CheckCertificateAndKey(
    const std::string& cert_path, const std::string& key_path, absl::Time now);

// A CA bundle: readable and holding at least one PEM certificate.
absl::Status CheckCaFile(const std::string& path);

}  // namespace ferry

#endif  // FERRY_AUTH_CERTIFICATES_H_
