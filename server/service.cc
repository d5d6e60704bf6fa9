#include "server/service.h"

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/job.h"
#include "server/validation.h"

#ifndef SCANSERVE_VERSION
#define SCANSERVE_VERSION "unknown"
#endif

namespace scanserve {
namespace {

using Env = ScanService::Env;

grpc::Status ToGrpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Time CallDeadline(const grpc::CallbackServerContext* context) {
  const std::chrono::system_clock::time_point deadline = context->deadline();
  if (deadline == std::chrono::system_clock::time_point::max()) return absl::InfiniteFuture();
  return absl::FromChrono(deadline);
}

// The server's clock for a call starts when its headers arrive, after the client started its own
// and serialized the request, so the client's deadline fires first and its cancellation can reach
// the server shortly before the server's deadline. One that arrives this close is that deadline.
constexpr absl::Duration kClientDeadlineLead = absl::Milliseconds(250);

// gRPC reports a call whose deadline passed as cancelled; the client sees DEADLINE_EXCEEDED, and
// the metrics should say the same.
absl::Status Attribute(const absl::Status& status, absl::Time deadline, absl::Time now) {
  if (status.code() == absl::StatusCode::kCancelled && now >= deadline - kClientDeadlineLead) {
    return absl::DeadlineExceededError("deadline passed before the request ran");
  }
  return status;
}

// ---- unary scan calls ----

// One unary scan call. Lives from the handler until gRPC calls OnDone, which happens only after
// Finish, so the request and response it was given (and the job's pointers into them) stay valid
// for as long as the job can run.
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  explicit UnaryCall(Executor* executor) : executor_(executor) {}

  void SetJob(JobPtr job) {
    absl::MutexLock lock(&mu_);
    job_ = std::move(job);
    if (cancelled_) job_->Cancel();
  }
  void OnCancel() override {
    bool queued = false;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      if (job_) {
        job_->Cancel();
        queued = true;
      }
    }
    // A worker sleeping until the queue's next deadline would otherwise hold the cancelled job
    // (and its memory and queue slot) until then.
    if (queued) executor_->Wake();
  }
  void OnDone() override { delete this; }

 private:
  Executor* const executor_;
  absl::Mutex mu_;
  JobPtr job_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

template <typename Response>
class UnaryJob final : public Job {
 public:
  UnaryJob(ValidatedWork validated, absl::Time deadline, const Env& env, UnaryCall* call,
           const Response* response, absl::Time arrival)
      : Job(std::move(validated.work), validated.bytes, deadline),
        env_(env),
        call_(call),
        response_(response),
        arrival_(arrival) {}

  void Finish(const absl::Status& status) override {
    const absl::Time now = env_.clock->Now();
    const absl::Status answer = Attribute(status, deadline(), now);
    env_.metrics->RequestFinished(op(), answer.code(), now - arrival_);
    if (answer.ok()) env_.metrics->BytesSent(static_cast<int64_t>(response_->ByteSizeLong()));
    // Last use of the call: it may be deleted as soon as Finish returns.
    call_->Finish(ToGrpc(answer));
  }

 private:
  const Env env_;
  UnaryCall* const call_;
  const Response* const response_;
  const absl::Time arrival_;
};

// ---- the Stream call ----

class StreamCall;

class StreamJob final : public Job {
 public:
  StreamJob(ValidatedWork validated, absl::Time deadline, StreamCall* call,
            std::unique_ptr<v1::StreamRequest> request,
            std::unique_ptr<v1::StreamResponse> response, absl::Time arrival)
      : Job(std::move(validated.work), validated.bytes, deadline),
        call_(call),
        request_(std::move(request)),
        response_(std::move(response)),
        arrival_(arrival) {}

  void Finish(const absl::Status& status) override;

 private:
  StreamCall* const call_;
  // The work points into both; the response moves to the call's write queue on Finish.
  const std::unique_ptr<v1::StreamRequest> request_;
  std::unique_ptr<v1::StreamResponse> response_;
  const absl::Time arrival_;
};

// One Stream call. Reads requests one at a time; each becomes a job (or an immediate error
// answer); answers are written one at a time in the order they finish.
//
// Memory bound: `outstanding_` counts requests read whose answer is not yet written. Reading
// pauses while it is at config.stream_max_in_flight, so a client that stops reading stops the
// server from reading too. Lifetime: Finish is called only once reading has stopped, no job is
// left and no write is pending, so no job ever refers to a deleted call.
class StreamCall final : public grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse> {
 public:
  StreamCall(const Env& env, grpc::CallbackServerContext* context)
      : env_(env), deadline_(CallDeadline(context)) {
    v1::StreamRequest* buffer;
    {
      absl::MutexLock lock(&mu_);
      reading_ = std::make_unique<v1::StreamRequest>();
      buffer = reading_.get();
    }
    StartRead(buffer);
  }

  void OnReadDone(bool ok) override {
    std::unique_ptr<v1::StreamRequest> request;
    Action action;
    {
      absl::MutexLock lock(&mu_);
      request = std::move(reading_);
      if (!ok || broken_) {
        read_state_ = ReadState::kDone;  // half-close by the client, or the call is over
        action = NextActionLocked();
        request.reset();
      } else {
        ++outstanding_;
      }
    }
    if (!request) {
      Act(action);
      return;
    }
    Accept(std::move(request));
    {
      absl::MutexLock lock(&mu_);
      if (broken_) {
        read_state_ = ReadState::kDone;
      } else if (outstanding_ < env_.config->stream_max_in_flight) {
        reading_ = std::make_unique<v1::StreamRequest>();
        action.read = reading_.get();
      } else {
        read_state_ = ReadState::kPaused;
      }
      if (!action.read) action = NextActionLocked();
    }
    Act(action);
  }

  void OnWriteDone(bool ok) override {
    std::unique_ptr<v1::StreamResponse> written;
    Action action;
    {
      absl::MutexLock lock(&mu_);
      written = std::move(to_write_.front().first);
      const int64_t bytes = to_write_.front().second;
      to_write_.pop_front();
      write_in_progress_ = false;
      --outstanding_;
      if (ok) {
        env_.metrics->BytesSent(bytes);
      } else {
        BreakLocked();  // the client is gone
      }
      if (!broken_ && !to_write_.empty()) {
        write_in_progress_ = true;
        action.write = to_write_.front().first.get();
      }
      if (!broken_ && read_state_ == ReadState::kPaused &&
          outstanding_ < env_.config->stream_max_in_flight) {
        read_state_ = ReadState::kReading;
        reading_ = std::make_unique<v1::StreamRequest>();
        action.read = reading_.get();
      }
      if (!action.read && !action.write) action = NextActionLocked();
    }
    Act(action);
  }

  void OnCancel() override {
    Action action;
    {
      absl::MutexLock lock(&mu_);
      BreakLocked();
      action = NextActionLocked();
    }
    // Workers sleeping until the queue's next deadline must drop the cancelled jobs now: the call
    // cannot finish while its jobs are queued.
    env_.executor->Wake();
    Act(action);
  }

  void OnDone() override { delete this; }

  // An answer for one request, from its job or from validation. Called once per request read.
  void Answer(Job* job, std::optional<OpKind> op, std::unique_ptr<v1::StreamResponse> response,
              const absl::Status& status, absl::Time arrival) {
    const absl::Time now = env_.clock->Now();
    const absl::Status answer = Attribute(status, deadline_, now);
    if (!answer.ok()) {
      response->clear_result();
      response->set_code(static_cast<int32_t>(answer.code()));
      response->set_message(std::string(answer.message()));
    }
    if (op) env_.metrics->RequestFinished(*op, answer.code(), now - arrival);
    const int64_t bytes = static_cast<int64_t>(response->ByteSizeLong());
    Action action;
    {
      absl::MutexLock lock(&mu_);
      if (job != nullptr) jobs_.erase(job);
      if (broken_) {
        --outstanding_;  // nobody to answer
      } else {
        to_write_.emplace_back(std::move(response), bytes);
        if (!write_in_progress_) {
          write_in_progress_ = true;
          action.write = to_write_.front().first.get();
        }
      }
      if (!action.write) action = NextActionLocked();
    }
    Act(action);
  }

 private:
  enum class ReadState { kReading, kPaused, kDone };

  // What to start once the mutex is released. Starting operations outside the lock keeps gRPC's
  // own locks out of ours.
  struct Action {
    v1::StreamRequest* read = nullptr;
    const v1::StreamResponse* write = nullptr;
    std::optional<grpc::Status> finish;
  };

  void Act(const Action& action) {
    // Finish never comes with a read or write, and is the last use of `this`.
    if (action.read) StartRead(action.read);
    if (action.write) StartWrite(action.write);
    if (action.finish) Finish(*action.finish);
  }

  // Validates and submits one request, or answers it at once.
  void Accept(std::unique_ptr<v1::StreamRequest> request) {
    const absl::Time arrival = env_.clock->Now();
    env_.metrics->BytesReceived(static_cast<int64_t>(request->ByteSizeLong()));
    const std::optional<OpKind> op = StreamRequestOp(*request);
    auto response = std::make_unique<v1::StreamResponse>();
    response->set_request_id(request->request_id());
    absl::StatusOr<ValidatedWork> validated =
        ValidateStreamRequest(*request, env_.config->limits, response.get());
    if (!validated.ok()) {
      Answer(nullptr, op, std::move(response), validated.status(), arrival);
      return;
    }
    auto job = std::make_shared<StreamJob>(std::move(*validated), deadline_, this,
                                           std::move(request), std::move(response), arrival);
    {
      absl::MutexLock lock(&mu_);
      jobs_.emplace(job.get(), job);
      if (broken_) job->Cancel();
    }
    if (absl::Status submitted = env_.executor->Submit(job); !submitted.ok()) {
      job->Finish(submitted);
    }
  }

  // The call is over for the client: cancel what is queued, drop what is not yet written (the
  // write in progress, if any, completes with ok=false).
  void BreakLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (broken_) return;
    broken_ = true;
    for (auto& [ptr, job] : jobs_) job->Cancel();
    const size_t keep = write_in_progress_ ? 1 : 0;
    while (to_write_.size() > keep) {
      to_write_.pop_back();
      --outstanding_;
    }
    if (read_state_ == ReadState::kPaused) read_state_ = ReadState::kDone;
  }

  Action NextActionLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Action action;
    if (!finished_ && read_state_ == ReadState::kDone && outstanding_ == 0 && jobs_.empty() &&
        !write_in_progress_) {
      finished_ = true;
      action.finish = broken_ ? grpc::Status::CANCELLED : grpc::Status::OK;
    }
    return action;
  }

  const Env env_;
  const absl::Time deadline_;
  absl::Mutex mu_;
  std::unique_ptr<v1::StreamRequest> reading_ ABSL_GUARDED_BY(mu_);
  ReadState read_state_ ABSL_GUARDED_BY(mu_) = ReadState::kReading;
  int64_t outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  // Answers waiting to be written with their sizes; the front one is being written when
  // write_in_progress_.
  std::deque<std::pair<std::unique_ptr<v1::StreamResponse>, int64_t>> to_write_
      ABSL_GUARDED_BY(mu_);
  bool write_in_progress_ ABSL_GUARDED_BY(mu_) = false;
  std::map<Job*, JobPtr> jobs_ ABSL_GUARDED_BY(mu_);
  bool broken_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

void StreamJob::Finish(const absl::Status& status) {
  call_->Answer(this, op(), std::move(response_), status, arrival_);
}

}  // namespace

std::string ServerVersion() { return SCANSERVE_VERSION; }

ScanService::ScanService(const ServerConfig& config, Backend* backend, Executor* executor,
                         ServerMetrics* metrics, Clock* clock)
    : config_(config), env_{&config_, backend, executor, metrics, clock} {}

template <typename Request, typename Response, typename Validate>
grpc::ServerUnaryReactor* ScanService::HandleScan(OpKind op, grpc::CallbackServerContext* context,
                                                  const Request* request, Response* response,
                                                  Validate validate) {
  const absl::Time arrival = env_.clock->Now();
  env_.metrics->BytesReceived(static_cast<int64_t>(request->ByteSizeLong()));
  auto* call = new UnaryCall(env_.executor);
  absl::StatusOr<ValidatedWork> validated = validate(*request, config_.limits, response);
  if (!validated.ok()) {
    env_.metrics->RequestFinished(op, validated.status().code(), env_.clock->Now() - arrival);
    call->Finish(ToGrpc(validated.status()));
    return call;
  }
  auto job = std::make_shared<UnaryJob<Response>>(std::move(*validated), CallDeadline(context),
                                                  env_, call, response, arrival);
  call->SetJob(job);
  if (absl::Status submitted = env_.executor->Submit(job); !submitted.ok()) job->Finish(submitted);
  return call;
}

grpc::ServerUnaryReactor* ScanService::LinearScan(grpc::CallbackServerContext* context,
                                                  const v1::LinearScanRequest* request,
                                                  v1::LinearScanResponse* response) {
  return HandleScan(OpKind::kLinearScan, context, request, response, ValidateLinearScan);
}

grpc::ServerUnaryReactor* ScanService::LinearScanBackward(
    grpc::CallbackServerContext* context, const v1::LinearScanBackwardRequest* request,
    v1::LinearScanBackwardResponse* response) {
  return HandleScan(OpKind::kLinearScanBackward, context, request, response,
                    ValidateLinearScanBackward);
}

grpc::ServerUnaryReactor* ScanService::SelectiveScan(grpc::CallbackServerContext* context,
                                                     const v1::SelectiveScanRequest* request,
                                                     v1::SelectiveScanResponse* response) {
  return HandleScan(OpKind::kSelectiveScan, context, request, response, ValidateSelectiveScan);
}

grpc::ServerUnaryReactor* ScanService::AssociativeScan(grpc::CallbackServerContext* context,
                                                       const v1::AssociativeScanRequest* request,
                                                       v1::AssociativeScanResponse* response) {
  return HandleScan(OpKind::kAssociativeScan, context, request, response, ValidateAssociativeScan);
}

grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse>* ScanService::Stream(
    grpc::CallbackServerContext* context) {
  return new StreamCall(env_, context);
}

grpc::ServerUnaryReactor* ScanService::ServerInfo(grpc::CallbackServerContext* context,
                                                  const v1::ServerInfoRequest* /*request*/,
                                                  v1::ServerInfoResponse* response) {
  response->set_version(ServerVersion());
  response->set_backend(std::string(env_.backend->Name()));
  for (const DeviceStatus& d : env_.backend->Devices()) {
    v1::DeviceInfo* info = response->add_devices();
    info->set_index(d.index);
    info->set_name(d.name);
    info->set_memory_total_bytes(d.memory_total_bytes);
    info->set_memory_used_bytes(d.memory_used_bytes);
    info->set_batches_executed(d.batches_executed);
  }
  v1::Limits* limits = response->mutable_limits();
  limits->set_max_elements_per_request(config_.limits.max_elements_per_request);
  limits->set_max_queued_bytes(config_.batching.max_queued_bytes);
  limits->set_max_message_bytes(config_.limits.max_message_bytes);
  limits->set_max_queued_requests(config_.batching.max_queued_requests);
  limits->set_max_state_dim(config_.limits.max_state_dim);
  v1::BatchingSettings* batching = response->mutable_batching();
  batching->set_max_batch_requests(config_.batching.max_batch_requests);
  batching->set_max_batch_rows(config_.batching.max_batch_rows);
  batching->set_max_batch_elements(config_.batching.max_batch_elements);
  batching->set_max_queue_delay_microseconds(
      absl::ToInt64Microseconds(config_.batching.max_queue_delay));
  for (OpKind op : {OpKind::kLinearScan, OpKind::kLinearScanBackward, OpKind::kSelectiveScan,
                    OpKind::kAssociativeScan}) {
    response->add_operations(std::string(OpName(op)));
  }
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* ScanService::Echo(grpc::CallbackServerContext* context,
                                            const v1::EchoRequest* request,
                                            v1::EchoResponse* response) {
  env_.metrics->BytesReceived(static_cast<int64_t>(request->ByteSizeLong()));
  response->set_payload(request->payload());
  env_.metrics->BytesSent(static_cast<int64_t>(response->ByteSizeLong()));
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace scanserve
