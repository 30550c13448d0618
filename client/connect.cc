#include "client/connect.h"

#include <cstdlib>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "auth/certificates.h"
#include "base/read_file.h"
#include "base/status_macros.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/client_interceptor.h"

namespace ferry {
namespace {

// ------------------------------------------------------------- naming

// How messages name the fields: by flag and variable for a command line,
// by field for a program that filled ConnectOptions itself.
struct Names {
  bool flags;
  // "--tls_key (or FERRY_TLS_KEY)", or "tls_key".
  std::string Want(absl::string_view field, absl::string_view env) const {
    return flags ? absl::StrCat("--", field, " (or ", env, ")")
                 : std::string(field);
  }
};

// What is wrong with a combination of fields, or OK. `label` names each
// set field as the user gave it ("--tls_cert", "FERRY_TLS_CERT").
struct Labels {
  std::string ca = "tls_ca";
  std::string cert = "tls_cert";
  std::string key = "tls_key";
  std::string server_name = "tls_server_name";
};

absl::Status CheckCombination(const ConnectOptions& o, const Labels& labels,
                              const Names& names) {
  if (!o.tls_cert.empty() && o.tls_key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(labels.cert, " needs ", names.Want("tls_key", kEnvTlsKey),
                     ": the private key of the client certificate"));
  }
  if (o.tls_cert.empty() && !o.tls_key.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(labels.key, " needs ", names.Want("tls_cert", kEnvTlsCert),
                     ": the client certificate of the key"));
  }
  // A client certificate without TLS to the broker verified by a CA:
  // refused rather than falling back to the system's roots (see connect.h).
  if (!o.tls() && !o.tls_cert.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        labels.cert, " needs ", names.Want("tls_ca", kEnvTlsCa),
        ": the CA that signed the broker's certificate, which turns TLS on"));
  }
  if (!o.tls() && !o.tls_server_name.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        labels.server_name, " needs ", names.Want("tls_ca", kEnvTlsCa),
        ": the name is checked only with TLS, which the CA turns on"));
  }
  return absl::OkStatus();
}

// Whether the token can go in a header as it is: printable ASCII, no
// spaces. Never quotes the token; `where` says where it came from.
absl::Status CheckToken(absl::string_view token, absl::string_view where) {
  if (absl::StrContains(token, '\n')) {
    return absl::InvalidArgumentError(absl::StrCat(
        where,
        " holds more than one line; it should hold the token's secret alone "
        "(as `ferry token create` printed it; ferryd's token file holds "
        "hashes, not secrets)"));
  }
  for (char c : token) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(absl::StrCat(
          where,
          " holds a space or a character that is not printable ASCII; it "
          "should hold the token's secret alone"));
    }
  }
  return absl::OkStatus();
}

// The token in `file` (a file holds the secret alone, perhaps with a
// newline after it).
absl::StatusOr<std::string> ReadTokenFile(const std::string& file,
                                          absl::string_view source) {
  absl::StatusOr<std::string> text = ReadFileToString(file);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": ", text.status().message()));
  }
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": token file ", file, " is empty"));
  }
  FERRY_RETURN_IF_ERROR(
      CheckToken(token, absl::StrCat(source, ": token file ", file)));
  return token;
}

// -------------------------------------------------------- certificates

// The PEM texts SslCredentials wants, read from the files and checked.
struct TlsFiles {
  std::string ca;
  std::string cert;
  std::string key;
};

// The whole of `file`; `label` names where it came from ("--tls_ca").
absl::StatusOr<std::string> ReadNamedFile(const std::string& file,
                                          absl::string_view label) {
  absl::StatusOr<std::string> text = ReadFileToString(file);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(label, ": ", text.status().message()));
  }
  return text;
}

absl::StatusOr<TlsFiles> ReadTlsFiles(const ConnectOptions& o,
                                      const Labels& labels) {
  TlsFiles files;
  if (!o.tls()) return files;
  FERRY_ASSIGN_OR_RETURN(files.ca, ReadNamedFile(o.tls_ca, labels.ca));
  FERRY_RETURN_IF_ERROR(CheckCaBundle(o.tls_ca, files.ca));
  if (o.tls_cert.empty()) return files;
  FERRY_ASSIGN_OR_RETURN(files.cert, ReadNamedFile(o.tls_cert, labels.cert));
  FERRY_ASSIGN_OR_RETURN(files.key, ReadNamedFile(o.tls_key, labels.key));
  FERRY_RETURN_IF_ERROR(CheckCertificateAndKey(
      o.tls_cert, files.cert, o.tls_key, files.key, "client certificate"));
  return files;
}

// ------------------------------------------------------------ the token

// Adds "authorization: Bearer <token>" to every call's initial metadata.
class BearerInterceptor : public grpc::experimental::Interceptor {
 public:
  explicit BearerInterceptor(std::shared_ptr<const std::string> value)
      : value_(std::move(value)) {}

  void Intercept(
      grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::
                PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace("authorization", *value_);
    }
    methods->Proceed();
  }

 private:
  const std::shared_ptr<const std::string> value_;
};

class BearerInterceptorFactory
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerInterceptorFactory(const std::string& token)
      : value_(std::make_shared<const std::string>(
            absl::StrCat("Bearer ", token))) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new BearerInterceptor(value_);
  }

 private:
  const std::shared_ptr<const std::string> value_;
};

}  // namespace

absl::StatusOr<ConnectOptions> ResolveConnectOptions(const ConnectFlags& flags,
                                                     const EnvLookup& getenv) {
  const auto env = [&getenv](const char* name) -> std::string {
    const char* value = getenv ? getenv(name) : std::getenv(name);
    return value == nullptr ? "" : value;
  };
  ConnectOptions options;
  Labels labels;
  // The flag, else the variable; `label` records which one gave it.
  const auto pick = [&](const std::string& flag, absl::string_view flag_name,
                        const char* env_name, std::string* label) {
    if (!flag.empty()) {
      if (label != nullptr) *label = absl::StrCat("--", flag_name);
      return flag;
    }
    if (label != nullptr) *label = env_name;
    return env(env_name);
  };
  options.tls_ca = pick(flags.tls_ca, "tls_ca", kEnvTlsCa, &labels.ca);
  options.tls_cert =
      pick(flags.tls_cert, "tls_cert", kEnvTlsCert, &labels.cert);
  options.tls_key = pick(flags.tls_key, "tls_key", kEnvTlsKey, &labels.key);
  options.tls_server_name = pick(flags.tls_server_name, "tls_server_name",
                                 kEnvTlsServerName, &labels.server_name);
  FERRY_RETURN_IF_ERROR(CheckCombination(options, labels, Names{true}));

  if (!flags.token_file.empty()) {
    FERRY_ASSIGN_OR_RETURN(options.token,
                           ReadTokenFile(flags.token_file, "--token_file"));
  } else if (std::string token = env(kEnvToken); !token.empty()) {
    // Shells and secret stores often leave a newline on it.
    options.token = std::string(absl::StripAsciiWhitespace(token));
    FERRY_RETURN_IF_ERROR(CheckToken(options.token, kEnvToken));
    if (options.token.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(kEnvToken, " holds only whitespace"));
    }
  } else if (std::string file = env(kEnvTokenFile); !file.empty()) {
    FERRY_ASSIGN_OR_RETURN(options.token, ReadTokenFile(file, kEnvTokenFile));
  }
  FERRY_RETURN_IF_ERROR(ReadTlsFiles(options, labels).status());
  return options;
}

absl::Status CheckConnectOptions(const ConnectOptions& options) {
  FERRY_RETURN_IF_ERROR(CheckCombination(options, Labels(), Names{false}));
  FERRY_RETURN_IF_ERROR(CheckToken(options.token, "the token"));
  return ReadTlsFiles(options, Labels()).status();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> OpenChannel(
    const std::string& address, const ConnectOptions& options,
    grpc::ChannelArguments args) {
  FERRY_RETURN_IF_ERROR(CheckCombination(options, Labels(), Names{false}));
  FERRY_RETURN_IF_ERROR(CheckToken(options.token, "the token"));
  FERRY_ASSIGN_OR_RETURN(TlsFiles files, ReadTlsFiles(options, Labels()));
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.tls()) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = std::move(files.ca);
    ssl.pem_cert_chain = std::move(files.cert);
    ssl.pem_private_key = std::move(files.key);
    credentials = grpc::SslCredentials(ssl);
    if (!options.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options.tls_server_name);
    }
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  if (!options.has_token()) {
    return grpc::CreateCustomChannel(address, credentials, args);
  }
  std::vector<
      std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(
      std::make_unique<BearerInterceptorFactory>(options.token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      address, credentials, args, std::move(interceptors));
}

}  // namespace ferry
