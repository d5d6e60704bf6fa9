#include "server/auth.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/ascii.h"

namespace scanserve {
namespace {

constexpr std::string_view kPublicServices[] = {
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
};

std::string_view TrimWhitespace(std::string_view s) {
  while (!s.empty() && absl::ascii_isspace(static_cast<unsigned char>(s.front()))) {
    s.remove_prefix(1);
  }
  while (!s.empty() && absl::ascii_isspace(static_cast<unsigned char>(s.back()))) {
    s.remove_suffix(1);
  }
  return s;
}

bool StartsWithIgnoreCase(std::string_view s, std::string_view lowercase_prefix) {
  if (s.size() < lowercase_prefix.size()) return false;
  for (size_t i = 0; i < lowercase_prefix.size(); ++i) {
    if (absl::ascii_tolower(static_cast<unsigned char>(s[i])) != lowercase_prefix[i]) return false;
  }
  return true;
}

absl::Status FileError(int error, const std::string& what) {
  return absl::Status(absl::ErrnoToStatusCode(error), what + ": " + std::strerror(error));
}

absl::Status Unauthenticated(const std::string& why) {
  return absl::UnauthenticatedError("authorization: " + why);
}

std::string_view SliceView(const grpc_slice& slice) {
  return std::string_view(reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)),
                          GRPC_SLICE_LENGTH(slice));
}

// The metadata processor of PlaintextCredentialsWithTokens, in gRPC core's form. `state` is a
// heap-allocated shared_ptr to the authenticator, freed by DestroyCore with the credentials.
void ProcessCore(void* state, grpc_auth_context* /*context*/, const grpc_metadata* md,
                 size_t num_md, grpc_process_auth_metadata_done_cb done, void* user_data) {
  const auto& authenticator = *static_cast<std::shared_ptr<const TokenAuthenticator>*>(state);
  std::string_view path;
  std::vector<std::string_view> authorization;
  std::vector<grpc_metadata> consumed;
  for (size_t i = 0; i < num_md; ++i) {
    const std::string_view key = SliceView(md[i].key);
    if (key == ":path") {
      path = SliceView(md[i].value);
    } else if (key == "authorization") {
      authorization.push_back(SliceView(md[i].value));
      consumed.push_back(md[i]);
    }
  }
  const absl::Status status = authenticator->Check(path, authorization);
  const std::string message(status.message());
  done(user_data, consumed.data(), consumed.size(), nullptr, 0,
       static_cast<grpc_status_code>(status.code()), status.ok() ? nullptr : message.c_str());
}

void DestroyCore(void* state) {
  delete static_cast<std::shared_ptr<const TokenAuthenticator>*>(state);
}

class PlaintextTokenCredentials final : public grpc::ServerCredentials {
 public:
  explicit PlaintextTokenCredentials(std::shared_ptr<const TokenAuthenticator> authenticator)
      : authenticator_(std::move(authenticator)) {}

  // The token check is this object's processor; replacing it would silently drop authentication,
  // so a second processor is a programming error, as it is on gRPC's own insecure credentials.
  void SetAuthMetadataProcessor(
      const std::shared_ptr<grpc::AuthMetadataProcessor>& /*processor*/) override {
    std::fprintf(stderr, "PlaintextCredentialsWithTokens: a second metadata processor\n");
    std::abort();
  }

 private:
  int AddPortToServer(const std::string& address, grpc_server* server) override {
    grpc_server_credentials* credentials = grpc_insecure_server_credentials_create();
    grpc_server_credentials_set_auth_metadata_processor(
        credentials, grpc_auth_metadata_processor{
                         &ProcessCore, &DestroyCore,
                         new std::shared_ptr<const TokenAuthenticator>(authenticator_)});
    // The listener keeps its own reference to the credentials (and so to the processor).
    const int port = grpc_server_add_http2_port(server, address.c_str(), credentials);
    grpc_server_credentials_release(credentials);
    return port;
  }

  const std::shared_ptr<const TokenAuthenticator> authenticator_;
};

}  // namespace

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  const size_t n = std::max(a.size(), b.size());
  size_t diff = a.size() ^ b.size();
  for (size_t i = 0; i < n; ++i) {
    // Past its end an input reads as zero; the length difference above already tells them apart.
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<size_t>(x ^ y);
  }
  return diff == 0;
}

absl::StatusOr<std::vector<std::string>> ParseTokenFile(const std::string& text,
                                                        const std::string& source) {
  std::vector<std::string> tokens;
  size_t pos = 0;
  for (int line_number = 1; pos < text.size(); ++line_number) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string_view line = TrimWhitespace(std::string_view(text).substr(pos, end - pos));
    pos = end + 1;
    if (line.empty() || line.front() == '#') continue;
    const std::string where = source + " line " + std::to_string(line_number);
    if (line.size() > kMaxBearerTokenBytes) {
      return absl::InvalidArgumentError(where + ": a token must be at most " +
                                        std::to_string(kMaxBearerTokenBytes) + " bytes, got " +
                                        std::to_string(line.size()));
    }
    for (char c : line) {
      if (c < 0x21 || c > 0x7e) {
        return absl::InvalidArgumentError(
            where + ": a token must be visible ASCII characters without spaces");
      }
    }
    tokens.emplace_back(line);
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(source +
                                      ": holds no token (only blank lines and '#' comments)");
  }
  return tokens;
}

absl::StatusOr<std::vector<std::string>> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  return ParseTokenFile(*text, "'" + path + "'");
}

absl::StatusOr<std::string> ReadFileToString(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) {
    return FileError(errno, "cannot open '" + path + "'");
  }
  std::string out;
  char buffer[8192];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) out.append(buffer, n);
  const bool failed = std::ferror(file) != 0;
  const int error = errno;
  std::fclose(file);
  if (failed) return FileError(error, "cannot read '" + path + "'");
  return out;
}

TokenSet::TokenSet(const std::vector<std::string>& tokens) {
  tokens_.reserve(tokens.size());
  for (const std::string& token : tokens) {
    std::string padded(kMaxBearerTokenBytes, '\0');
    const size_t length = std::min(token.size(), kMaxBearerTokenBytes);
    padded.replace(0, length, token, 0, length);
    tokens_.push_back(Padded{std::move(padded), token.size()});
  }
}

bool TokenSet::Contains(std::string_view presented) const {
  // The presented length is the caller's own knowledge, so refusing an overlong token early
  // reveals nothing about the accepted ones.
  if (presented.size() > kMaxBearerTokenBytes) return false;
  std::string padded(kMaxBearerTokenBytes, '\0');
  padded.replace(0, presented.size(), presented);
  bool found = false;
  for (const Padded& token : tokens_) {
    // Non-short-circuit operators: every token is compared in full whatever matched before.
    found |= ConstantTimeEquals(padded, token.bytes) & (presented.size() == token.length);
  }
  return found;
}

bool IsPublicMethod(std::string_view path) {
  for (std::string_view prefix : kPublicServices) {
    if (path.substr(0, prefix.size()) == prefix) return true;
  }
  return false;
}

absl::StatusOr<std::shared_ptr<TokenAuthenticator>> TokenAuthenticator::FromFile(std::string path) {
  absl::StatusOr<std::vector<std::string>> tokens = ReadTokenFile(path);
  if (!tokens.ok()) return tokens.status();
  return std::shared_ptr<TokenAuthenticator>(
      new TokenAuthenticator(std::move(path), std::make_shared<const TokenSet>(*tokens)));
}

TokenAuthenticator::TokenAuthenticator(std::string path, std::shared_ptr<const TokenSet> tokens)
    : path_(std::move(path)), tokens_(std::move(tokens)) {}

absl::Status TokenAuthenticator::Reload() {
  absl::StatusOr<std::vector<std::string>> tokens = ReadTokenFile(path_);
  if (!tokens.ok()) return tokens.status();
  auto fresh = std::make_shared<const TokenSet>(*tokens);
  absl::MutexLock lock(&mu_);
  tokens_ = std::move(fresh);
  return absl::OkStatus();
}

size_t TokenAuthenticator::token_count() const {
  absl::ReaderMutexLock lock(&mu_);
  return tokens_->size();
}

absl::Status TokenAuthenticator::Check(std::string_view path,
                                       const std::vector<std::string_view>& authorization) const {
  if (IsPublicMethod(path)) return absl::OkStatus();
  if (authorization.empty()) {
    return Unauthenticated("missing; calls need the metadata 'authorization: Bearer <token>'");
  }
  if (authorization.size() > 1)
    return Unauthenticated("must be sent once, got it " + std::to_string(authorization.size()) +
                           " times");
  std::string_view value = authorization.front();
  // RFC 7235: the scheme is case-insensitive, then one or more spaces.
  constexpr std::string_view kScheme = "bearer ";
  if (!StartsWithIgnoreCase(value, kScheme)) {
    return Unauthenticated("the scheme must be Bearer ('authorization: Bearer <token>')");
  }
  value.remove_prefix(kScheme.size());
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  std::shared_ptr<const TokenSet> tokens;
  {
    absl::ReaderMutexLock lock(&mu_);
    tokens = tokens_;
  }
  if (!tokens->Contains(value)) return Unauthenticated("the bearer token is not accepted");
  return absl::OkStatus();
}

TokenAuthMetadataProcessor::TokenAuthMetadataProcessor(
    std::shared_ptr<const TokenAuthenticator> authenticator)
    : authenticator_(std::move(authenticator)) {}

grpc::Status TokenAuthMetadataProcessor::Process(const InputMetadata& auth_metadata,
                                                 grpc::AuthContext* /*context*/,
                                                 OutputMetadata* consumed_auth_metadata,
                                                 OutputMetadata* /*response_metadata*/) {
  std::string_view path;
  std::vector<std::string_view> authorization;
  for (const auto& [key, value] : auth_metadata) {
    const std::string_view k(key.data(), key.size());
    const std::string_view v(value.data(), value.size());
    if (k == ":path") {
      path = v;
    } else if (k == "authorization") {
      authorization.push_back(v);
      consumed_auth_metadata->emplace(std::string(k), std::string(v));
    }
  }
  const absl::Status status = authenticator_->Check(path, authorization);
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, std::string(status.message()));
}

std::shared_ptr<grpc::ServerCredentials> PlaintextCredentialsWithTokens(
    std::shared_ptr<const TokenAuthenticator> authenticator) {
  return std::make_shared<PlaintextTokenCredentials>(std::move(authenticator));
}

}  // namespace scanserve
