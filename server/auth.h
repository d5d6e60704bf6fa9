// Bearer-token authentication of gRPC calls.
//
// Tokens come from a file: one token per line, surrounding whitespace ignored, blank lines and
// lines starting with '#' skipped. A token is 1 to kMaxBearerTokenBytes visible ASCII characters
// (no spaces), as RFC 6750 allows in an Authorization header. A call is accepted when its
// metadata holds exactly one "authorization: Bearer <token>" with a token from the file; the
// comparison takes the same time whichever token matches, where it differs, or how long it is.
// Health checks (grpc.health.v1.Health) and server reflection need no token, so probes and
// tooling work without one.
//
// The check runs in gRPC's server auth filter (grpc::AuthMetadataProcessor): an unauthenticated
// call is answered UNAUTHENTICATED before it reaches any handler, so it never costs validation or
// queue space. The authorization metadata is consumed there and handlers never see a token.
//
// Ownership: TokenAuthenticator owns its token set; the processor and credentials share the
// authenticator. Thread-safety: TokenSet is immutable. TokenAuthenticator::Check and Reload may
// run concurrently from any threads; a reload swaps the whole set at once.
#ifndef SCANSERVE_SERVER_AUTH_H_
#define SCANSERVE_SERVER_AUTH_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/security/auth_metadata_processor.h"
#include "grpcpp/security/server_credentials.h"

namespace scanserve {

// Longest token accepted. Every comparison runs over this many bytes whatever the lengths.
inline constexpr size_t kMaxBearerTokenBytes = 1024;

// True when a and b hold the same bytes. Reads every byte of the longer input and has no branch
// on the data, so its time depends on the lengths only (TokenSet pads both sides to one length).
bool ConstantTimeEquals(std::string_view a, std::string_view b);

// The tokens of a token file's text; `source` names it in errors. INVALID_ARGUMENT naming the
// line of a malformed token, or when the text holds no token at all (that would refuse every
// call, which is never what a reload meant).
absl::StatusOr<std::vector<std::string>> ParseTokenFile(const std::string& text,
                                                        const std::string& source);
// The whole content of a (small) file: token files and PEM certificates and keys. The errno
// status naming the path when it cannot be opened or read.
absl::StatusOr<std::string> ReadFileToString(const std::string& path);

// Reads and parses a token file; NOT_FOUND / PERMISSION_DENIED / ... when it cannot be read.
absl::StatusOr<std::vector<std::string>> ReadTokenFile(const std::string& path);

// An immutable set of accepted tokens.
class TokenSet {
 public:
  // Tokens must satisfy ParseTokenFile's rules (at most kMaxBearerTokenBytes).
  explicit TokenSet(const std::vector<std::string>& tokens);

  // Compares `presented` with every token, all the way through, before answering.
  bool Contains(std::string_view presented) const;
  size_t size() const { return tokens_.size(); }

 private:
  // Each token zero-padded to kMaxBearerTokenBytes, so every comparison has one length.
  struct Padded {
    std::string bytes;
    size_t length;
  };
  std::vector<Padded> tokens_;
};

// The gRPC method paths (":path") callable without a token: health checks and reflection.
bool IsPublicMethod(std::string_view path);

// The current token set of a token file, reloadable.
class TokenAuthenticator {
 public:
  // Reads the file; its error when it cannot be read or parsed.
  static absl::StatusOr<std::shared_ptr<TokenAuthenticator>> FromFile(std::string path);

  // Rereads the file. On any error the current tokens stay in force and the error says why.
  absl::Status Reload();
  size_t token_count() const;
  const std::string& path() const { return path_; }

  // OK when a call to `path` with these authorization values may proceed, else UNAUTHENTICATED
  // saying what was wrong (never echoing the presented token).
  absl::Status Check(std::string_view path,
                     const std::vector<std::string_view>& authorization) const;

 private:
  TokenAuthenticator(std::string path, std::shared_ptr<const TokenSet> tokens);

  const std::string path_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const TokenSet> tokens_ ABSL_GUARDED_BY(mu_);
};

// Runs TokenAuthenticator::Check for every call of the server it is installed on; consumes the
// authorization metadata.
class TokenAuthMetadataProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit TokenAuthMetadataProcessor(std::shared_ptr<const TokenAuthenticator> authenticator);

  // The check takes a mutex briefly and never does I/O, so it runs inline on gRPC's thread.
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& auth_metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed_auth_metadata,
                       OutputMetadata* response_metadata) override;

 private:
  const std::shared_ptr<const TokenAuthenticator> authenticator_;
};

// Plaintext server credentials that check every call with `authenticator`, as
// TokenAuthMetadataProcessor does on TLS credentials. gRPC's C++ InsecureServerCredentials()
// refuses a metadata processor, although gRPC's core runs one on plaintext connections too; these
// credentials bind their port through the core API to install it. For tokens without TLS:
// loopback, or TLS terminated by a proxy or service mesh in front of the server.
std::shared_ptr<grpc::ServerCredentials> PlaintextCredentialsWithTokens(
    std::shared_ptr<const TokenAuthenticator> authenticator);

}  // namespace scanserve

#endif  // SCANSERVE_SERVER_AUTH_H_
