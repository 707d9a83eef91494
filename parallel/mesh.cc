#include "parallel/mesh.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "runtime/base/check.h"
#include "runtime/base/status_macros.h"

namespace loom::parallel {
namespace {

constexpr Axis kAxes[kNumAxes] = {Axis::kDp, Axis::kTp, Axis::kPp, Axis::kEp};

// The axes of `order`, fastest first; empty if it is not a permutation of the four names.
std::vector<Axis> ParseOrder(absl::string_view order) {
  std::vector<Axis> axes;
  for (absl::string_view name : absl::StrSplit(order, '-')) {
    bool known = false;
    for (Axis a : kAxes) {
      if (AxisName(a) != name) continue;
      for (Axis seen : axes) {
        if (seen == a) return {};
      }
      axes.push_back(a);
      known = true;
    }
    if (!known) return {};
  }
  if (axes.size() != kNumAxes) return {};
  return axes;
}

}  // namespace

absl::string_view AxisName(Axis axis) {
  switch (axis) {
    case Axis::kDp:
      return "dp";
    case Axis::kTp:
      return "tp";
    case Axis::kPp:
      return "pp";
    case Axis::kEp:
      return "ep";
  }
  return "?";
}

int MeshShape::size(Axis axis) const {
  switch (axis) {
    case Axis::kDp:
      return dp;
    case Axis::kTp:
      return tp;
    case Axis::kPp:
      return pp;
    case Axis::kEp:
      return ep;
  }
  return 0;
}

absl::Status MeshShape::Validate(int world_size) const {
  for (Axis a : kAxes) {
    if (size(a) < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", AxisName(a), " must be >= 1, got ", size(a)));
    }
  }
  if (ParseOrder(order).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "mesh order '", order, "' must name each of tp, ep, dp, pp once, e.g. tp-ep-dp-pp"));
  }
  if (static_cast<int64_t>(dp) * tp * pp * ep != world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("dp ", dp, " x tp ", tp, " x pp ", pp, " x ep ", ep, " = ",
                     static_cast<int64_t>(dp) * tp * pp * ep, " ranks, but the job has ",
                     world_size, "; change the sizes so they multiply to ", world_size,
                     " (or run with mpirun -np ", static_cast<int64_t>(dp) * tp * pp * ep, ")"));
  }
  return absl::OkStatus();
}

std::string MeshShape::ToString() const {
  return absl::StrCat("dp ", dp, " x tp ", tp, " x pp ", pp, " x ep ", ep, " (order ", order, ")");
}

int Mesh::RankOf(const MeshShape& shape, const std::array<int, kNumAxes>& coords) {
  int rank = 0, stride = 1;
  for (Axis a : ParseOrder(shape.order)) {
    rank += coords.at(static_cast<size_t>(a)) * stride;
    stride *= shape.size(a);
  }
  return rank;
}

std::array<int, kNumAxes> Mesh::CoordsOf(const MeshShape& shape, int rank) {
  std::array<int, kNumAxes> coords{};
  for (Axis a : ParseOrder(shape.order)) {
    coords.at(static_cast<size_t>(a)) = rank % shape.size(a);
    rank /= shape.size(a);
  }
  return coords;
}

Mesh::Mesh(comm::Communicator& world, MeshShape shape)
    : world_(world), shape_(std::move(shape)), coords_(CoordsOf(shape_, world.rank())) {}

absl::StatusOr<std::unique_ptr<Mesh>> Mesh::Create(comm::Communicator& world, MeshShape shape) {
  LOOM_RETURN_IF_ERROR(shape.Validate(world.size()));
  std::unique_ptr<Mesh> mesh(new Mesh(world, std::move(shape)));
  for (Axis a : kAxes) {
    // An axis that spans every rank is the world itself (every rank knows: the sizes agree).
    if (mesh->size(a) == world.size()) continue;
    // The group of `a`: every rank with this rank's other coordinates. Its color is the world rank
    // of its member with coordinate 0 along `a`; its key orders members by that coordinate.
    std::array<int, kNumAxes> base = mesh->coords_;
    base[static_cast<int>(a)] = 0;
    LOOM_ASSIGN_OR_RETURN(mesh->groups_[static_cast<int>(a)],
                          world.Split(RankOf(mesh->shape_, base), mesh->coord(a)));
  }
  return mesh;
}

}  // namespace loom::parallel
