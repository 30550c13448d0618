// The test PKI: what it makes verifies (or fails to) as its names say.

#include "tests/tls_certs.h"

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <sys/stat.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/status_matchers.h"
#include "tests/temp_dir.h"

namespace ferry::testing {
namespace {

X509* ReadCert(const std::string& path) {
  FILE* file = fopen(path.c_str(), "r");
  if (file == nullptr) return nullptr;
  X509* cert = PEM_read_X509(file, nullptr, nullptr, nullptr);
  fclose(file);
  return cert;
}

// X509_V_OK or the verification error of `leaf` against the CA in `ca`,
// for `purpose` (X509_PURPOSE_SSL_SERVER or _CLIENT).
int Verify(const std::string& ca, const std::string& leaf, int purpose) {
  X509* ca_cert = ReadCert(ca);
  X509* cert = ReadCert(leaf);
  if (ca_cert == nullptr || cert == nullptr) return -1;
  X509_STORE* store = X509_STORE_new();
  X509_STORE_add_cert(store, ca_cert);
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, cert, nullptr);
  X509_STORE_CTX_set_purpose(ctx, purpose);
  const int ok = X509_verify_cert(ctx);
  const int error = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  X509_STORE_free(store);
  X509_free(cert);
  X509_free(ca_cert);
  return error;
}

TEST(TlsCertsTest, TestPkiVerifiesAsNamed) {
  ScopedTempDir dir;
  FERRY_ASSERT_OK_AND_ASSIGN(TestPki pki, MakeTestPki(dir.path()));
  EXPECT_EQ(Verify(pki.ca, pki.server_cert, X509_PURPOSE_SSL_SERVER),
            X509_V_OK);
  EXPECT_EQ(Verify(pki.ca, pki.client_cert, X509_PURPOSE_SSL_CLIENT),
            X509_V_OK);
  EXPECT_EQ(
      Verify(pki.other_ca, pki.other_server_cert, X509_PURPOSE_SSL_SERVER),
      X509_V_OK);
  EXPECT_EQ(Verify(pki.other_ca, pki.server_cert, X509_PURPOSE_SSL_SERVER),
            X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
  EXPECT_EQ(Verify(pki.ca, pki.expired_server_cert, X509_PURPOSE_SSL_SERVER),
            X509_V_ERR_CERT_HAS_EXPIRED);
  EXPECT_EQ(Verify(pki.ca, pki.expired_client_cert, X509_PURPOSE_SSL_CLIENT),
            X509_V_ERR_CERT_HAS_EXPIRED);
  // A client certificate is no server's, and the reverse.
  EXPECT_NE(Verify(pki.ca, pki.client_cert, X509_PURPOSE_SSL_SERVER),
            X509_V_OK);
  EXPECT_NE(Verify(pki.ca, pki.server_cert, X509_PURPOSE_SSL_CLIENT),
            X509_V_OK);
}

TEST(TlsCertsTest, ServerCertificateNamesLocalhost) {
  ScopedTempDir dir;
  FERRY_ASSERT_OK_AND_ASSIGN(TestPki pki, MakeTestPki(dir.path()));
  X509* cert = ReadCert(pki.server_cert);
  ASSERT_NE(cert, nullptr);
  EXPECT_EQ(X509_check_host(cert, "localhost", 0, 0, nullptr), 1);
  EXPECT_EQ(X509_check_ip_asc(cert, "127.0.0.1", 0), 1);
  EXPECT_NE(X509_check_host(cert, "example.com", 0, 0, nullptr), 1);
  X509_free(cert);
}

TEST(TlsCertsTest, KeysAreOwnerOnly) {
  ScopedTempDir dir;
  FERRY_ASSERT_OK_AND_ASSIGN(TestPki pki, MakeTestPki(dir.path()));
  struct stat info;
  ASSERT_EQ(stat(pki.server_key.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600);
}

TEST(TlsCertsTest, MakeCertReplacesInPlaceWithChosenValidity) {
  ScopedTempDir dir;
  FERRY_ASSERT_OK_AND_ASSIGN(CertFiles ca, MakeCa(dir.path(), "ca"));
  FERRY_ASSERT_OK_AND_ASSIGN(CertFiles first,
                             MakeCert(dir.path(), "leaf", ca, {"DNS:a.test"}));
  EXPECT_EQ(Verify(ca.cert, first.cert, X509_PURPOSE_SSL_SERVER), X509_V_OK);
  FERRY_ASSERT_OK_AND_ASSIGN(CertFiles later,
                             MakeCert(dir.path(), "leaf", ca, {"DNS:a.test"},
                                      absl::Hours(1), absl::Hours(2)));
  EXPECT_EQ(later.cert, first.cert);
  EXPECT_EQ(Verify(ca.cert, later.cert, X509_PURPOSE_SSL_SERVER),
            X509_V_ERR_CERT_NOT_YET_VALID);
}

TEST(TlsCertsTest, MissingCaIsAnError) {
  ScopedTempDir dir;
  EXPECT_THAT(MakeCert(dir.path(), "leaf",
                       {dir.path() + "/no.crt", dir.path() + "/no.key"}, {}),
              StatusIs(absl::StatusCode::kNotFound));
}

}  // namespace
}  // namespace ferry::testing
