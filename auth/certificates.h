#ifndef FERRY_AUTH_CERTIFICATES_H_
#define FERRY_AUTH_CERTIFICATES_H_

// Checks of TLS files before gRPC gets them, for ferryd and for every
// client: a wrong file is refused at start with a message that names it
// and says what is wrong, instead of every handshake failing later with a
// generic error. Validity is checked against the real time (certificates
// live in the real world, not behind the Clock interface).

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry {

// The certificate chain `cert_pem` (read from `cert_path`) and the private
// key `key_pem` (from `key_path`), checked: PEM, the key unencrypted and
// the first certificate's, that certificate valid now. `what` names the
// certificate in messages ("client certificate"). INVALID_ARGUMENT, e.g.
//   FILE is not a PEM certificate
//   client certificate FILE has expired (on 2026-01-02 15:04:05 UTC)
//   client certificate FILE is not valid yet (from ...)
//   FILE is not a PEM private key
//   key FILE is encrypted; give it unencrypted (...)
//   key KEY does not match certificate CERT
absl::Status CheckCertificateAndKey(const std::string& cert_path,
                                    const std::string& cert_pem,
                                    const std::string& key_path,
                                    const std::string& key_pem,
                                    absl::string_view what);

// The CA bundle `pem` (read from `path`), checked: PEM certificates, at
// least one valid now (a bundle may keep an old CA beside the new one).
absl::Status CheckCaBundle(const std::string& path, const std::string& pem);

// "CN=ferry.internal", and "2026-01-02 15:04:05 UTC", of the first
// certificate in `pem` (already checked); empty if it cannot be read.
std::string CertificateSubject(const std::string& pem);
std::string CertificateNotAfter(const std::string& pem);
// Whether the first certificate in `pem` expires within `seconds`.
bool CertificateExpiresWithin(const std::string& pem, int64_t seconds);

}  // namespace ferry

#endif  // FERRY_AUTH_CERTIFICATES_H_
