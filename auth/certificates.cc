#include "auth/certificates.h"

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>

#include "absl/strings/str_cat.h"
#include "base/read_file.h"
#include "base/status_macros.h"

namespace ferry {
namespace {

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* x509) const { X509_free(x509); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Certificate = std::unique_ptr<X509, X509Free>;
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;

Bio MemoryBio(const std::string& text) {
  return Bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

absl::StatusOr<Certificate> ReadCertificate(const std::string& path) {
  FERRY_ASSIGN_OR_RETURN(std::string text, ReadFileToString(path));
  Bio bio = MemoryBio(text);
  Certificate cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (cert == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " holds no PEM certificate (BEGIN CERTIFICATE)"));
  }
  return cert;
}

absl::Time ToTime(const ASN1_TIME* when) {
  struct tm tm = {};
  if (ASN1_TIME_to_tm(when, &tm) != 1) return absl::InfinitePast();
  return absl::FromTM(tm, absl::UTCTimeZone());
}

std::string Subject(X509* cert) {
  char buffer[512];
  X509_NAME_oneline(X509_get_subject_name(cert), buffer, sizeof(buffer));
  return buffer;
}

}  // namespace

absl::StatusOr<CertificateInfo> CheckCertificateAndKey(
    const std::string& cert_path, const std::string& key_path, absl::Time now) {
  FERRY_ASSIGN_OR_RETURN(Certificate cert, ReadCertificate(cert_path));
  FERRY_ASSIGN_OR_RETURN(std::string key_text, ReadFileToString(key_path));
  Bio bio = MemoryBio(key_text);
  Key key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        key_path, " holds no PEM private key (or it is encrypted)"));
  }
  if (X509_check_private_key(cert.get(), key.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        key_path, " is not the private key of the certificate in ", cert_path));
  }
  CertificateInfo info;
  info.subject = Subject(cert.get());
  info.not_before = ToTime(X509_get0_notBefore(cert.get()));
  info.not_after = ToTime(X509_get0_notAfter(cert.get()));
  if (now >= info.not_after) {
    return absl::InvalidArgumentError(
        absl::StrCat("the certificate in ", cert_path, " expired on ",
                     absl::FormatTime(info.not_after, absl::UTCTimeZone())));
  }
  if (now < info.not_before) {
    return absl::InvalidArgumentError(
        absl::StrCat("the certificate in ", cert_path, " is not valid until ",
                     absl::FormatTime(info.not_before, absl::UTCTimeZone())));
  }
  return info;
}

absl::Status CheckCaFile(const std::string& path) {
  return ReadCertificate(path).status();
}

}  // namespace ferry
