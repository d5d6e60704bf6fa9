#include "scanserve/ops.h"

#include <initializer_list>
#include <string>
#include <string_view>

namespace scanserve {
namespace {

// Joins parts with '/'. Plain std::string: Debian's Abseil has its own string_view type.
std::string Join(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view part : parts) {
    if (!out.empty()) out += '/';
    out += part;
  }
  return out;
}

std::string_view Flag(bool value) { return value ? "1" : "0"; }

}  // namespace

std::string SignatureKey(const LinearScanOptions& o) {
  return Join({OpName(OpKind::kLinearScan), DTypeName(o.dtype), LayoutName(o.layout),
               std::string("b") += Flag(o.has_b), std::string("c") += Flag(o.has_c),
               std::string("h0") += Flag(o.has_h0), std::string("rev") += Flag(o.reverse),
               std::string("final") += Flag(o.return_final_state)});
}

std::string SignatureKey(const LinearScanBackwardOptions& o) {
  return Join({OpName(OpKind::kLinearScanBackward), DTypeName(o.dtype), LayoutName(o.layout),
               std::string("b") += Flag(o.has_b), std::string("c") += Flag(o.has_c),
               std::string("h0") += Flag(o.has_h0), std::string("states") += Flag(o.has_states),
               std::string("rev") += Flag(o.reverse)});
}

std::string SignatureKey(const SelectiveScanOptions& o) {
  return Join({OpName(OpKind::kSelectiveScan), DTypeName(o.dtype), LayoutName(o.layout),
               "n" + std::to_string(o.state_dim), "g" + std::to_string(o.groups),
               o.variable_b ? "Bvar" : "Bfix", o.variable_c ? "Cvar" : "Cfix",
               std::string("dskip") += Flag(o.has_d_skip), std::string("z") += Flag(o.has_z),
               std::string("bias") += Flag(o.has_delta_bias),
               std::string("softplus") += Flag(o.delta_softplus),
               std::string("h0") += Flag(o.has_h0),
               std::string("last") += Flag(o.return_last_state)});
}

std::string SignatureKey(const AssociativeScanOptions& o) {
  return Join({OpName(OpKind::kAssociativeScan), DTypeName(o.dtype), LayoutName(o.layout),
               ScanOperatorName(o.op), std::string("rev") += Flag(o.reverse),
               std::string("excl") += Flag(o.exclusive)});
}

}  // namespace scanserve
