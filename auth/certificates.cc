#include "auth/certificates.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <ctime>
#include <memory>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "base/status_macros.h"

namespace ferry {
namespace {

struct Free {
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
template <typename T>
using Ptr = std::unique_ptr<T, Free>;

// libcrypto keeps errors in a per-thread queue; gRPC (built on the same
// library on Debian) reads it too. Leave it as found.
struct ClearCryptoErrors {
  ~ClearCryptoErrors() { ERR_clear_error(); }
};

Ptr<BIO> MemoryBio(const std::string& text) {
  return Ptr<BIO>(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// "2026-01-02 15:04:05 UTC"; "?" if it cannot be read.
std::string FormatAsn1Time(const ASN1_TIME* time) {
  std::tm tm = {};
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) return "?";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC",
                          absl::FromTM(tm, absl::UTCTimeZone()),
                          absl::UTCTimeZone());
}

// The certificates in the PEM text of `file`; an error if there are none.
absl::StatusOr<std::vector<Ptr<X509>>> ParseCertificates(
    const std::string& file, const std::string& pem) {
  ClearCryptoErrors clear;
  std::vector<Ptr<X509>> certs;
  Ptr<BIO> bio = MemoryBio(pem);
  while (bio != nullptr) {
    X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
    if (cert == nullptr) break;
    certs.emplace_back(cert);
  }
  if (certs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, " is not a PEM certificate"));
  }
  return certs;
}

// Why `cert` is not valid now, or OK. `what` names it ("client certificate
// FILE").
absl::Status CheckValidNow(X509* cert, absl::string_view what) {
  if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is not valid yet (from ",
                     FormatAsn1Time(X509_get0_notBefore(cert)), ")"));
  }
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has expired (on ",
                     FormatAsn1Time(X509_get0_notAfter(cert)), ")"));
  }
  return absl::OkStatus();
}

// Never asks for a passphrase (libcrypto would read it from the terminal).
int NoPassphrase(char*, int, int, void*) { return -1; }

// The first certificate of `pem`, or null.
Ptr<X509> First(const std::string& pem) {
  ClearCryptoErrors clear;
  Ptr<BIO> bio = MemoryBio(pem);
  if (bio == nullptr) return nullptr;
  return Ptr<X509>(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

}  // namespace

absl::Status CheckCertificateAndKey(const std::string& cert_path,
                                    const std::string& cert_pem,
                                    const std::string& key_path,
                                    const std::string& key_pem,
                                    absl::string_view what) {
  FERRY_ASSIGN_OR_RETURN(std::vector<Ptr<X509>> chain,
                         ParseCertificates(cert_path, cert_pem));
  FERRY_RETURN_IF_ERROR(
      CheckValidNow(chain.front().get(), absl::StrCat(what, " ", cert_path)));
  ClearCryptoErrors clear;
  Ptr<BIO> bio = MemoryBio(key_pem);
  Ptr<EVP_PKEY> key(
      bio == nullptr
          ? nullptr
          : PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  if (key == nullptr) {
    if (absl::StrContains(key_pem, "ENCRYPTED")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "key ", key_path,
          " is encrypted; give it unencrypted (protect it by its file's "
          "permissions)"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat(key_path, " is not a PEM private key"));
  }
  if (X509_check_private_key(chain.front().get(), key.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "key ", key_path, " does not match certificate ", cert_path));
  }
  return absl::OkStatus();
}

absl::Status CheckCaBundle(const std::string& path, const std::string& pem) {
  FERRY_ASSIGN_OR_RETURN(std::vector<Ptr<X509>> cas,
                         ParseCertificates(path, pem));
  // One expired CA in a bundle is fine; a bundle of only expired ones can
  // verify nothing.
  absl::Status last;
  for (const Ptr<X509>& ca : cas) {
    last = CheckValidNow(ca.get(), absl::StrCat("CA certificate ", path));
    if (last.ok()) break;
  }
  return last;
}

std::string CertificateSubject(const std::string& pem) {
  Ptr<X509> cert = First(pem);
  if (cert == nullptr) return "";
  char buffer[512];
  X509_NAME_oneline(X509_get_subject_name(cert.get()), buffer, sizeof(buffer));
  return buffer;
}

std::string CertificateNotAfter(const std::string& pem) {
  Ptr<X509> cert = First(pem);
  if (cert == nullptr) return "";
  return FormatAsn1Time(X509_get0_notAfter(cert.get()));
}

bool CertificateExpiresWithin(const std::string& pem, int64_t seconds) {
  Ptr<X509> cert = First(pem);
  if (cert == nullptr) return false;
  const time_t then = time(nullptr) + static_cast<time_t>(seconds);
  return X509_cmp_time(X509_get0_notAfter(cert.get()),
                       const_cast<time_t*>(&then)) < 0;
}

}  // namespace ferry
