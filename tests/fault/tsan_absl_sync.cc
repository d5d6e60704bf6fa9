// ThreadSanitizer annotations for an Abseil that was not built with ThreadSanitizer.
//
// The system's libabsl_synchronization is uninstrumented and its Mutex, CondVar and Notification
// block on futexes, which ThreadSanitizer cannot see: every variable guarded by an absl::Mutex
// would be reported as a race. The TSan build (SCANSERVE_SANITIZE=thread) links this file into
// every executable. Its definitions of the synchronization entry points take precedence over the
// shared library's (the executable is searched first, also for calls made from libgrpc), forward
// to the real functions found with dlsym(RTLD_NEXT) and tell ThreadSanitizer about the
// happens-before edge: release before a lock is given up, acquire after it is taken.
//
// Calls inside libabsl_synchronization itself (e.g. Notification's own use of Mutex) do not go
// through these definitions, which is why Notification is annotated on its own.
//
// Thread-safety: every function is safe from any thread; the dlsym lookups are function-local
// statics.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

extern "C" {
void __tsan_acquire(void* addr);
void __tsan_release(void* addr);
}

namespace {

#define SCANSERVE_STR_INNER(x) #x
#define SCANSERVE_STR(x) SCANSERVE_STR_INNER(x)

// Itanium mangling of absl::<inline namespace>::<suffix>; `suffix` is already mangled, e.g.
// "5Mutex4LockEv" for absl::Mutex::Lock(). Const member functions carry a K after the N.
std::string AbslSymbol(const char* suffix, bool is_const) {
  const char* ns = SCANSERVE_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  return std::string(is_const ? "_ZNK4absl" : "_ZN4absl") + std::to_string(std::strlen(ns)) + ns +
         suffix;
}

template <typename Fn>
Fn Real(const char* suffix, bool is_const = false) {
  const std::string name = AbslSymbol(suffix, is_const);
  void* symbol = dlsym(RTLD_NEXT, name.c_str());
  if (symbol == nullptr) {
    std::fprintf(stderr, "tsan_absl_sync: %s not found: %s\n", name.c_str(), dlerror());
    std::abort();
  }
  return reinterpret_cast<Fn>(symbol);
}

// A mutex's lock state is published through the mutex object's address; a notification's through
// its own.
void Acquire(const void* p) { __tsan_acquire(const_cast<void*>(p)); }
void Release(const void* p) { __tsan_release(const_cast<void*>(p)); }

// Abseil evaluates a Condition inside its own code with the mutex held (by the waiter, or by the
// thread unlocking), before the annotated acquire after the call: the evaluation acquires first.
// The Condition object itself is read by whichever thread evaluates it, so it is built before the
// release that publishes it; for LockWhen that release is one the caller would not otherwise make
// (it does not hold the mutex yet), which can only hide races, never invent them.
struct AnnotatedCondition {
  const absl::Condition* condition;
  const absl::Mutex* mu;
  static bool Eval(AnnotatedCondition* c) {
    Acquire(c->mu);
    const bool result = c->condition->Eval();
    // When false the evaluating thread gives the mutex up inside Abseil, unannotated.
    Release(c->mu);
    return result;
  }
};

}  // namespace

// The mangled names below spell the Abseil signatures out; types after the inline namespace use
// substitutions (S0_ = absl::<ns>, S1_ = absl::<ns>::Mutex, ...) exactly as the compiler emits.
namespace absl {
ABSL_NAMESPACE_BEGIN

void Mutex::Lock() {
  static const auto real = Real<void (*)(Mutex*)>("5Mutex4LockEv");
  real(this);
  Acquire(this);
}

void Mutex::ReaderLock() {
  static const auto real = Real<void (*)(Mutex*)>("5Mutex10ReaderLockEv");
  real(this);
  Acquire(this);
}

bool Mutex::TryLock() {
  static const auto real = Real<bool (*)(Mutex*)>("5Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}

bool Mutex::ReaderTryLock() {
  static const auto real = Real<bool (*)(Mutex*)>("5Mutex13ReaderTryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}

void Mutex::Unlock() {
  static const auto real = Real<void (*)(Mutex*)>("5Mutex6UnlockEv");
  Release(this);
  real(this);
}

void Mutex::ReaderUnlock() {
  static const auto real = Real<void (*)(Mutex*)>("5Mutex12ReaderUnlockEv");
  Release(this);
  real(this);
}

void Mutex::LockWhen(const Condition& cond) {
  static const auto real =
      Real<void (*)(Mutex*, const Condition&)>("5Mutex8LockWhenERKNS0_9ConditionE");
  AnnotatedCondition annotated{&cond, this};
  const Condition annotated_cond(&AnnotatedCondition::Eval, &annotated);
  Release(this);  // the condition is published with it
  real(this, annotated_cond);
  Acquire(this);
}

void Mutex::ReaderLockWhen(const Condition& cond) {
  static const auto real =
      Real<void (*)(Mutex*, const Condition&)>("5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  AnnotatedCondition annotated{&cond, this};
  const Condition annotated_cond(&AnnotatedCondition::Eval, &annotated);
  Release(this);  // the condition is published with it
  real(this, annotated_cond);
  Acquire(this);
}

bool Mutex::LockWhenWithTimeout(const Condition& cond, absl::Duration timeout) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  AnnotatedCondition annotated{&cond, this};
  const Condition annotated_cond(&AnnotatedCondition::Eval, &annotated);
  Release(this);  // the condition is published with it
  const bool result = real(this, annotated_cond, timeout);
  Acquire(this);  // held on return whatever the result
  return result;
}

bool Mutex::LockWhenWithDeadline(const Condition& cond, absl::Time deadline) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Time)>(
      "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  AnnotatedCondition annotated{&cond, this};
  const Condition annotated_cond(&AnnotatedCondition::Eval, &annotated);
  Release(this);  // the condition is published with it
  const bool result = real(this, annotated_cond, deadline);
  Acquire(this);
  return result;
}

void Mutex::Await(const Condition& cond) {
  static const auto real =
      Real<void (*)(Mutex*, const Condition&)>("5Mutex5AwaitERKNS0_9ConditionE");
  AnnotatedCondition annotated{&cond, this};
  const Condition annotated_cond(&AnnotatedCondition::Eval, &annotated);
  Release(this);  // the condition is published with it
  real(this, annotated_cond);
  Acquire(this);
}

bool Mutex::AwaitWithTimeout(const Condition& cond, absl::Duration timeout) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Duration)>(
      "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  AnnotatedCondition annotated{&cond, this};
  const Condition annotated_cond(&AnnotatedCondition::Eval, &annotated);
  Release(this);  // the condition is published with it
  const bool result = real(this, annotated_cond, timeout);
  Acquire(this);
  return result;
}

bool Mutex::AwaitWithDeadline(const Condition& cond, absl::Time deadline) {
  static const auto real = Real<bool (*)(Mutex*, const Condition&, absl::Time)>(
      "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  AnnotatedCondition annotated{&cond, this};
  const Condition annotated_cond(&AnnotatedCondition::Eval, &annotated);
  Release(this);  // the condition is published with it
  const bool result = real(this, annotated_cond, deadline);
  Acquire(this);
  return result;
}

void CondVar::Wait(Mutex* mu) {
  static const auto real = Real<void (*)(CondVar*, Mutex*)>("7CondVar4WaitEPNS0_5MutexE");
  Release(mu);
  real(this, mu);
  Acquire(mu);
}

bool CondVar::WaitWithTimeout(Mutex* mu, absl::Duration timeout) {
  static const auto real = Real<bool (*)(CondVar*, Mutex*, absl::Duration)>(
      "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Release(mu);
  const bool result = real(this, mu, timeout);
  Acquire(mu);
  return result;
}

bool CondVar::WaitWithDeadline(Mutex* mu, absl::Time deadline) {
  static const auto real = Real<bool (*)(CondVar*, Mutex*, absl::Time)>(
      "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Release(mu);
  const bool result = real(this, mu, deadline);
  Acquire(mu);
  return result;
}

void Notification::Notify() {
  static const auto real = Real<void (*)(Notification*)>("12Notification6NotifyEv");
  Release(this);
  real(this);
}

void Notification::WaitForNotification() const {
  static const auto real =
      Real<void (*)(const Notification*)>("12Notification19WaitForNotificationEv", true);
  real(this);
  Acquire(this);
}

bool Notification::WaitForNotificationWithTimeout(absl::Duration timeout) const {
  static const auto real = Real<bool (*)(const Notification*, absl::Duration)>(
      "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE", true);
  const bool notified = real(this, timeout);
  if (notified) Acquire(this);
  return notified;
}

bool Notification::WaitForNotificationWithDeadline(absl::Time deadline) const {
  static const auto real = Real<bool (*)(const Notification*, absl::Time)>(
      "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE", true);
  const bool notified = real(this, deadline);
  if (notified) Acquire(this);
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl

namespace {

// Abseil's own deadlock detector (on in Debian's build, which leaves NDEBUG unset) keeps a graph
// of every Mutex, guarded by an internal SpinLock that ThreadSanitizer cannot see either: two
// threads destroying Mutexes then look like a race inside GraphCycles. ThreadSanitizer checks
// lock order itself through the annotations above, so the TSan build turns Abseil's off.
const bool kAbslDeadlockDetectionOff = [] {
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return true;
}();

}  // namespace
