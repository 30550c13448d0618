#ifndef FERRY_TESTS_TLS_CERTS_H_
#define FERRY_TESTS_TLS_CERTS_H_

// Certificates for tests, made on the spot with libcrypto: a CA, server and
// client certificates it signs, expired ones, one from another CA. Keys are
// EC P-256; everything is PEM, one file per certificate and one per key:
//
//   FERRY_ASSERT_OK_AND_ASSIGN(TestPki pki, MakeTestPki(dir.path()));
//   // pki.ca, pki.server_cert, pki.server_key, ...
//
//   // Or one at a time, e.g. to replace a server's certificate in place:
//   FERRY_ASSERT_OK_AND_ASSIGN(CertFiles ca, MakeCa(dir, "ca"));
//   FERRY_ASSERT_OK_AND_ASSIGN(CertFiles server,
//       MakeCert(dir, "server", ca, {"DNS:localhost", "IP:127.0.0.1"}));
//
// Files are written whole under a temporary name and then renamed over
// DIR/NAME.crt and DIR/NAME.key (mode 0600), so a process that reloads them
// never reads half a file; the key is renamed first, then the certificate.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace ferry::testing {

// Paths of a certificate and its private key.
struct CertFiles {
  std::string cert;  // DIR/NAME.crt
  std::string key;   // DIR/NAME.key
};

// A self-signed CA certificate with subject CN=`name`, valid from an hour
// ago for ten years.
absl::StatusOr<CertFiles> MakeCa(const std::string& dir,
                                 const std::string& name);

// A leaf certificate with subject CN=`name`, signed by `ca` (from MakeCa),
// valid from now + not_before to now + not_after (negative offsets are in
// the past: -48h and -24h give an expired certificate; +1h and +24h one not
// valid yet). `sans` are subjectAltName entries in OpenSSL's notation,
// "DNS:localhost", "IP:127.0.0.1"; none: no subjectAltName extension.
// `is_client` sets extendedKeyUsage clientAuth, else serverAuth.
absl::StatusOr<CertFiles> MakeCert(const std::string& dir,
                                   const std::string& name, const CertFiles& ca,
                                   const std::vector<std::string>& sans,
                                   absl::Duration not_before = -absl::Hours(1),
                                   absl::Duration not_after = absl::Hours(24),
                                   bool is_client = false);

// Everything a TLS test usually needs, as paths under one directory.
struct TestPki {
  std::string ca;  // CA certificate ("ca.crt"); its key: ca_key
  std::string ca_key;
  std::string server_cert;  // CN=server, SAN DNS:localhost, IP:127.0.0.1
  std::string server_key;
  std::string client_cert;  // CN=client, clientAuth
  std::string client_key;
  std::string other_ca;  // an unrelated CA ("wrong CA"); key: other_ca_key
  std::string other_ca_key;
  std::string other_server_cert;  // like server_cert, signed by other_ca
  std::string other_server_key;
  std::string expired_server_cert;  // like server_cert, expired a day ago
  std::string expired_server_key;
  std::string expired_client_cert;  // like client_cert, expired a day ago
  std::string expired_client_key;

  CertFiles ca_files() const { return {ca, ca_key}; }
  CertFiles other_ca_files() const { return {other_ca, other_ca_key}; }
};

// Makes the files of TestPki in `dir` (which must exist).
absl::StatusOr<TestPki> MakeTestPki(const std::string& dir);

}  // namespace ferry::testing

#endif  // FERRY_TESTS_TLS_CERTS_H_
