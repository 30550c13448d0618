#include "tests/tls_certs.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"

namespace ferry::testing {
namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
};
template <typename T>
using Ptr = std::unique_ptr<T, Free>;

// What went wrong, with libcrypto's queued errors.
absl::Status CryptoError(absl::string_view what) {
  std::string detail;
  while (unsigned long code = ERR_get_error()) {
    char buffer[256];
    ERR_error_string_n(code, buffer, sizeof(buffer));
    absl::StrAppend(&detail, detail.empty() ? "" : "; ", buffer);
  }
  return absl::InternalError(absl::StrCat(what, ": ", detail));
}

absl::StatusOr<Ptr<EVP_PKEY>> NewKey() {
  Ptr<EVP_PKEY_CTX> ctx(EVP_PKEY_CTX_new_id(EVP_PKEY_EC, nullptr));
  EVP_PKEY* key = nullptr;
  if (ctx == nullptr || EVP_PKEY_keygen_init(ctx.get()) != 1 ||
      EVP_PKEY_CTX_set_ec_paramgen_curve_nid(ctx.get(), NID_X9_62_prime256v1) !=
          1 ||
      EVP_PKEY_keygen(ctx.get(), &key) != 1) {
    return CryptoError("generating an EC P-256 key");
  }
  return Ptr<EVP_PKEY>(key);
}

// Writes `contents` to `path` through a temporary file in the same
// directory, renamed over `path`.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& contents, mode_t mode) {
  std::string temp = path + ".tmp.XXXXXX";
  const int fd = mkstemp(temp.data());
  if (fd < 0) {
    return absl::InternalError(
        absl::StrCat("mkstemp ", temp, ": ", std::strerror(errno)));
  }
  const auto fail = [&](absl::string_view what) {
    const int number = errno;
    close(fd);
    unlink(temp.c_str());
    return absl::InternalError(
        absl::StrCat(what, " ", temp, ": ", std::strerror(number)));
  };
  if (fchmod(fd, mode) != 0) return fail("fchmod");
  size_t written = 0;
  while (written < contents.size()) {
    const ssize_t n =
        write(fd, contents.data() + written, contents.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return fail("write");
    written += static_cast<size_t>(n);
  }
  if (close(fd) != 0) {
    unlink(temp.c_str());
    return absl::InternalError(
        absl::StrCat("close ", temp, ": ", std::strerror(errno)));
  }
  if (rename(temp.c_str(), path.c_str()) != 0) {
    const int number = errno;
    unlink(temp.c_str());
    return absl::InternalError(absl::StrCat("rename ", temp, " to ", path, ": ",
                                            std::strerror(number)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> BioContents(BIO* bio) {
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  if (size < 0) return CryptoError("reading a memory BIO");
  return std::string(data, static_cast<size_t>(size));
}

// Writes the key, then the certificate (see the header).
absl::StatusOr<CertFiles> WritePair(const std::string& dir,
                                    const std::string& name, EVP_PKEY* key,
                                    X509* cert) {
  CertFiles files{absl::StrCat(dir, "/", name, ".crt"),
                  absl::StrCat(dir, "/", name, ".key")};
  Ptr<BIO> key_bio(BIO_new(BIO_s_mem()));
  Ptr<BIO> cert_bio(BIO_new(BIO_s_mem()));
  if (key_bio == nullptr || cert_bio == nullptr ||
      PEM_write_bio_PrivateKey(key_bio.get(), key, nullptr, nullptr, 0, nullptr,
                               nullptr) != 1 ||
      PEM_write_bio_X509(cert_bio.get(), cert) != 1) {
    return CryptoError(absl::StrCat("writing PEM for ", name));
  }
  absl::StatusOr<std::string> key_pem = BioContents(key_bio.get());
  if (!key_pem.ok()) return key_pem.status();
  absl::StatusOr<std::string> cert_pem = BioContents(cert_bio.get());
  if (!cert_pem.ok()) return cert_pem.status();
  if (absl::Status s = WriteFileAtomically(files.key, *key_pem, 0600);
      !s.ok()) {
    return s;
  }
  if (absl::Status s = WriteFileAtomically(files.cert, *cert_pem, 0644);
      !s.ok()) {
    return s;
  }
  return files;
}

// Adds extension `nid` = `value` (OpenSSL config notation) to `cert`.
absl::Status AddExtension(X509* cert, X509* issuer, int nid,
                          const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  Ptr<X509_EXTENSION> ext(
      X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  if (ext == nullptr || X509_add_ext(cert, ext.get(), -1) != 1) {
    return CryptoError(
        absl::StrCat("adding extension ", OBJ_nid2sn(nid), "=", value));
  }
  return absl::OkStatus();
}

// A certificate for `key` with subject CN=`name`, valid between the
// offsets from now, with a random serial; not yet signed.
absl::StatusOr<Ptr<X509>> NewCert(const std::string& name, EVP_PKEY* key,
                                  absl::Duration not_before,
                                  absl::Duration not_after) {
  Ptr<X509> cert(X509_new());
  if (cert == nullptr || X509_set_version(cert.get(), 2) != 1) {
    return CryptoError("X509_new");
  }
  unsigned char serial_bytes[16];
  if (RAND_bytes(serial_bytes, sizeof(serial_bytes)) != 1) {
    return CryptoError("RAND_bytes");
  }
  serial_bytes[0] &= 0x7f;  // positive
  Ptr<BIGNUM> serial(BN_bin2bn(serial_bytes, sizeof(serial_bytes), nullptr));
  if (serial == nullptr ||
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert.get())) ==
          nullptr) {
    return CryptoError("setting the serial number");
  }
  if (X509_gmtime_adj(X509_getm_notBefore(cert.get()),
                      absl::ToInt64Seconds(not_before)) == nullptr ||
      X509_gmtime_adj(X509_getm_notAfter(cert.get()),
                      absl::ToInt64Seconds(not_after)) == nullptr) {
    return CryptoError("setting the validity");
  }
  X509_NAME* subject = X509_get_subject_name(cert.get());
  if (X509_NAME_add_entry_by_txt(
          subject, "CN", MBSTRING_UTF8,
          reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1,
          0) != 1 ||
      X509_set_pubkey(cert.get(), key) != 1) {
    return CryptoError("setting the subject");
  }
  return cert;
}

absl::StatusOr<std::string> ReadAll(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::string contents;
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) {
    contents.append(buffer, n);
  }
  std::fclose(file);
  return contents;
}

}  // namespace

absl::StatusOr<CertFiles> MakeCa(const std::string& dir,
                                 const std::string& name) {
  absl::StatusOr<Ptr<EVP_PKEY>> key = NewKey();
  if (!key.ok()) return key.status();
  absl::StatusOr<Ptr<X509>> cert =
      NewCert(name, key->get(), -absl::Hours(1), absl::Hours(24 * 3650));
  if (!cert.ok()) return cert.status();
  X509* x = cert->get();
  if (X509_set_issuer_name(x, X509_get_subject_name(x)) != 1) {
    return CryptoError("setting the issuer");
  }
  for (const auto& [nid, value] : std::vector<std::pair<int, std::string>>{
           {NID_basic_constraints, "critical,CA:TRUE"},
           {NID_key_usage, "critical,keyCertSign,cRLSign"},
           {NID_subject_key_identifier, "hash"},
           {NID_authority_key_identifier, "keyid:always"}}) {
    if (absl::Status s = AddExtension(x, x, nid, value); !s.ok()) return s;
  }
  if (X509_sign(x, key->get(), EVP_sha256()) == 0) {
    return CryptoError(absl::StrCat("signing CA ", name));
  }
  return WritePair(dir, name, key->get(), x);
}

absl::StatusOr<CertFiles> MakeCert(const std::string& dir,
                                   const std::string& name, const CertFiles& ca,
                                   const std::vector<std::string>& sans,
                                   absl::Duration not_before,
                                   absl::Duration not_after, bool is_client) {
  absl::StatusOr<std::string> ca_cert_pem = ReadAll(ca.cert);
  if (!ca_cert_pem.ok()) return ca_cert_pem.status();
  absl::StatusOr<std::string> ca_key_pem = ReadAll(ca.key);
  if (!ca_key_pem.ok()) return ca_key_pem.status();
  Ptr<BIO> cert_bio(BIO_new_mem_buf(ca_cert_pem->data(),
                                    static_cast<int>(ca_cert_pem->size())));
  Ptr<BIO> key_bio(BIO_new_mem_buf(ca_key_pem->data(),
                                   static_cast<int>(ca_key_pem->size())));
  Ptr<X509> ca_cert(
      PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
  Ptr<EVP_PKEY> ca_key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (ca_cert == nullptr || ca_key == nullptr) {
    return CryptoError(absl::StrCat("reading CA ", ca.cert, " and ", ca.key));
  }

  absl::StatusOr<Ptr<EVP_PKEY>> key = NewKey();
  if (!key.ok()) return key.status();
  absl::StatusOr<Ptr<X509>> cert =
      NewCert(name, key->get(), not_before, not_after);
  if (!cert.ok()) return cert.status();
  X509* x = cert->get();
  if (X509_set_issuer_name(x, X509_get_subject_name(ca_cert.get())) != 1) {
    return CryptoError("setting the issuer");
  }
  std::vector<std::pair<int, std::string>> extensions = {
      {NID_basic_constraints, "critical,CA:FALSE"},
      {NID_key_usage, "critical,digitalSignature,keyAgreement"},
      {NID_ext_key_usage, is_client ? "clientAuth" : "serverAuth"},
      {NID_subject_key_identifier, "hash"},
      {NID_authority_key_identifier, "keyid:always"},
  };
  if (!sans.empty()) {
    extensions.push_back({NID_subject_alt_name, absl::StrJoin(sans, ",")});
  }
  for (const auto& [nid, value] : extensions) {
    if (absl::Status s = AddExtension(x, ca_cert.get(), nid, value); !s.ok()) {
      return s;
    }
  }
  if (X509_sign(x, ca_key.get(), EVP_sha256()) == 0) {
    return CryptoError(absl::StrCat("signing ", name));
  }
  return WritePair(dir, name, key->get(), x);
}

absl::StatusOr<TestPki> MakeTestPki(const std::string& dir) {
  const std::vector<std::string> server_sans = {"DNS:localhost",
                                                "IP:127.0.0.1"};
  const absl::Duration day = absl::Hours(24);
  TestPki pki;
  absl::StatusOr<CertFiles> ca = MakeCa(dir, "ca");
  if (!ca.ok()) return ca.status();
  pki.ca = ca->cert;
  pki.ca_key = ca->key;
  absl::StatusOr<CertFiles> other_ca = MakeCa(dir, "other_ca");
  if (!other_ca.ok()) return other_ca.status();
  pki.other_ca = other_ca->cert;
  pki.other_ca_key = other_ca->key;

  struct Leaf {
    const char* name;
    const CertFiles* ca;
    bool client;
    absl::Duration not_before, not_after;
    std::string* cert;
    std::string* key;
  };
  const Leaf leaves[] = {
      {"server", &*ca, false, -absl::Hours(1), day, &pki.server_cert,
       &pki.server_key},
      {"client", &*ca, true, -absl::Hours(1), day, &pki.client_cert,
       &pki.client_key},
      {"other_server", &*other_ca, false, -absl::Hours(1), day,
       &pki.other_server_cert, &pki.other_server_key},
      {"expired_server", &*ca, false, -2 * day, -day, &pki.expired_server_cert,
       &pki.expired_server_key},
      {"expired_client", &*ca, true, -2 * day, -day, &pki.expired_client_cert,
       &pki.expired_client_key},
  };
  for (const Leaf& leaf : leaves) {
    // The CN of a server certificate is its name, as SANs are.
    absl::StatusOr<CertFiles> files =
        MakeCert(dir, leaf.name, *leaf.ca,
                 leaf.client ? std::vector<std::string>{} : server_sans,
                 leaf.not_before, leaf.not_after, leaf.client);
    if (!files.ok()) return files.status();
    *leaf.cert = files->cert;
    *leaf.key = files->key;
  }
  return pki;
}

}  // namespace ferry::testing
