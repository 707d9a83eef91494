// Mesh: the job's ranks arranged as dp × tp × pp × ep, and one communicator per axis.
//
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Mesh> mesh,
//                         Mesh::Create(*world, {.dp = 2, .tp = 2, .order = "tp-ep-dp-pp"}));
//   Communicator& dp = mesh->group(Axis::kDp);   // the ranks that differ only in their dp index
//   int stage = mesh->coord(Axis::kPp);
//
// The order string lists the four axes fastest-varying first (Megatron-style): with "tp-ep-dp-pp"
// world rank = tp + TP·(ep + EP·(dp + DP·pp)), so tensor-parallel groups are neighbouring ranks
// and stay inside a host. Create validates the shape (every size >= 1, product = world size,
// order a permutation of tp, ep, dp, pp) before any collective, so a bad shape fails on every
// rank with the same message; then it splits the world once per axis (collective, in a fixed
// order). Axes of size 1 get a communicator of one rank; an axis that spans every rank uses the
// world communicator itself. Layers receive the groups they need
// explicitly; there is no global process-group state.
#pragma once

#include <array>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "comm/communicator.h"

namespace loom::parallel {

enum class Axis { kDp, kTp, kPp, kEp };
inline constexpr int kNumAxes = 4;
absl::string_view AxisName(Axis axis);  // "dp", "tp", "pp", "ep"

struct MeshShape {
  int dp = 1;
  int tp = 1;
  int pp = 1;
  int ep = 1;
  std::string order = "tp-ep-dp-pp";

  int size(Axis axis) const;
  int world_size() const { return dp * tp * pp * ep; }
  // InvalidArgument saying what to change, unless every size is >= 1, they multiply to
  // `world_size`, and `order` names each of tp, ep, dp, pp once ("tp-ep-dp-pp").
  absl::Status Validate(int world_size) const;
  std::string ToString() const;  // "dp 2 × tp 1 × pp 1 × ep 1 (order tp-ep-dp-pp)"
};

class Mesh {
 public:
  // Validates `shape` against world.size(), then creates the four axis groups (collective).
  // `world` must outlive the mesh.
  static absl::StatusOr<std::unique_ptr<Mesh>> Create(comm::Communicator& world, MeshShape shape);

  const MeshShape& shape() const { return shape_; }
  int size(Axis axis) const { return shape_.size(axis); }
  // This rank's index along `axis`.
  int coord(Axis axis) const { return coords_[static_cast<int>(axis)]; }
  // The ranks that share every coordinate but `axis`, ordered by their `axis` coordinate (the
  // world itself when the axis spans every rank, e.g. pure data parallelism).
  comm::Communicator& group(Axis axis) const {
    const auto& g = groups_[static_cast<int>(axis)];
    return g != nullptr ? *g : world_;
  }
  comm::Communicator& world() const { return world_; }

  // The world rank with the given coordinates (indexed by Axis), under `shape`'s order.
  static int RankOf(const MeshShape& shape, const std::array<int, kNumAxes>& coords);
  // The coordinates of world rank `rank`.
  static std::array<int, kNumAxes> CoordsOf(const MeshShape& shape, int rank);

 private:
  Mesh(comm::Communicator& world, MeshShape shape);

  comm::Communicator& world_;
  MeshShape shape_;
  std::array<int, kNumAxes> coords_{};
  std::array<std::unique_ptr<comm::Communicator>, kNumAxes> groups_;
};

}  // namespace loom::parallel
