// ParallelContext: the groups a rank belongs to, handed explicitly to the model's layers, data
// parallelism and the trainer (there is no global process-group state).
//
//   LOOM_ASSIGN_OR_RETURN(auto mesh, Mesh::Create(*world, {.dp = 2, .tp = 2}));
//   ParallelContext ctx = ParallelContext::FromMesh(*mesh);
//   GptModel model(config, ctx);       // tensor-parallel layers over ctx.tp
//   ... DataParallel over *ctx.dp, .tp = ctx.tp, .pp = ctx.pp ...
//
// A null group means the axis is not used (one rank along it). The communicators are not owned;
// they must outlive whoever holds the context.
#pragma once

#include "comm/communicator.h"
#include "parallel/mesh.h"

namespace loom::parallel {

struct ParallelContext {
  comm::Communicator* world = nullptr;  // the whole job (agreement on skips and norms)
  comm::Communicator* dp = nullptr;     // data parallelism: same model piece, other data
  comm::Communicator* tp = nullptr;     // tensor parallelism: other pieces of the same layers
  comm::Communicator* pp = nullptr;     // pipeline parallelism: the other stages
  comm::Communicator* ep = nullptr;     // expert parallelism: other experts, other tokens

  // The mesh's groups (tp, pp and ep only when the mesh has more than one rank along them).
  static ParallelContext FromMesh(const Mesh& mesh) {
    return {.world = &mesh.world(),
            .dp = &mesh.group(Axis::kDp),
            .tp = mesh.size(Axis::kTp) > 1 ? &mesh.group(Axis::kTp) : nullptr,
            .pp = mesh.size(Axis::kPp) > 1 ? &mesh.group(Axis::kPp) : nullptr,
            .ep = mesh.size(Axis::kEp) > 1 ? &mesh.group(Axis::kEp) : nullptr};
  }
  int tp_size() const { return tp != nullptr ? tp->size() : 1; }
  int tp_rank() const { return tp != nullptr ? tp->rank() : 0; }
  int pp_size() const { return pp != nullptr ? pp->size() : 1; }
  int pp_rank() const { return pp != nullptr ? pp->rank() : 0; }
  int ep_size() const { return ep != nullptr ? ep->size() : 1; }
  int ep_rank() const { return ep != nullptr ? ep->rank() : 0; }
};

}  // namespace loom::parallel
