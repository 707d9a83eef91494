#include "comm/p2p_backend.h"

#include <cstdlib>
#include <limits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/algorithms/dissemination_barrier.h"
#include "comm/algorithms/halving_doubling_all_reduce.h"
#include "comm/algorithms/pairwise_all_to_all.h"
#include "comm/algorithms/ring_all_gather.h"
#include "comm/algorithms/ring_all_reduce.h"
#include "comm/algorithms/ring_reduce_scatter.h"
#include "comm/algorithms/tree_broadcast.h"
#include "comm/exchange.h"
#include "runtime/base/check.h"

namespace loom::comm {

using runtime::DType;
using Algorithm = P2POptions::AllReduceAlgorithm;

Algorithm ChooseAllReduce(const P2POptions& options, int world, int64_t bytes) {
  if (options.all_reduce != Algorithm::kAuto) return options.all_reduce;
  const bool power_of_two = (world & (world - 1)) == 0;
  if (power_of_two && bytes <= options.halving_doubling_max_bytes) {
    return Algorithm::kHalvingDoubling;
  }
  if (!power_of_two && world >= 5 && bytes <= options.halving_doubling_max_bytes_non_pow2) {
    return Algorithm::kHalvingDoubling;
  }
  return Algorithm::kRing;
}

namespace {

constexpr int kCollectiveTag = 0;

class P2PBackend : public Backend {
 public:
  P2PBackend(std::unique_ptr<PointToPoint> p2p, P2POptions options)
      : p2p_(std::move(p2p)), options_(options) {
    LOOM_CHECK(p2p_ != nullptr) << "MakeP2PBackend: no transport";
  }

  int rank() const override { return p2p_->rank(); }
  int size() const override { return p2p_->size(); }
  std::string name() const override { return "ring"; }

  absl::Status Run(const CollectiveArgs& args, Deadline deadline) override {
    const bool collective = args.fp.op != CollectiveOp::kSend && args.fp.op != CollectiveOp::kRecv;
    if (!collective) return RunOp(args, deadline);
    const uint64_t call = EnterCollective();
    const absl::Status s = RunOp(args, deadline);
    // The algorithm names the neighbour it is blocked on; the transport may know who is missing.
    return s.ok() ? s : NameMissingRanks(s, MissingRanks(call));
  }

  uint64_t EnterCollective() override {
    p2p_->EnterCollective(++collectives_);
    return collectives_;
  }
  std::vector<int> MissingRanks(uint64_t call) const override { return p2p_->MissingRanks(call); }

  absl::Status RunOp(const CollectiveArgs& args, Deadline deadline) {
    const Fingerprint& fp = args.fp;
    const P2PContext ctx{*p2p_, deadline, kCollectiveTag, options_.segment_bytes};
    switch (fp.op) {
      case CollectiveOp::kAllReduce:
        if (ChooseAllReduce(options_, size(), static_cast<int64_t>(Bytes(fp.dtype, fp.count))) ==
            Algorithm::kHalvingDoubling) {
          return HalvingDoublingAllReduce(ctx, args.in, args.out, fp.count, fp.dtype, fp.reduce);
        }
        return RingAllReduce(ctx, args.in, args.out, fp.count, fp.dtype, fp.reduce);
      case CollectiveOp::kReduceScatter:
        return RingReduceScatter(ctx, args.in, args.out, fp.count, fp.dtype, fp.reduce);
      case CollectiveOp::kAllGather:
        return RingAllGather(ctx, args.in, args.out, fp.count, fp.dtype);
      case CollectiveOp::kAllToAll:
        return PairwiseAllToAll(ctx, args.in, args.out, fp.count, fp.dtype);
      case CollectiveOp::kAllToAllV:
        return PairwiseAllToAllV(ctx, args.in, args.send_counts, args.out, args.recv_counts,
                                 fp.dtype);
      case CollectiveOp::kBroadcast:
        return TreeBroadcast(ctx, args.out, fp.count, fp.dtype, fp.root);
      case CollectiveOp::kSend:
      case CollectiveOp::kRecv: {
        if (args.tag < 0 || args.tag == std::numeric_limits<int>::max()) {
          return absl::InvalidArgumentError(absl::StrCat("tag ", args.tag, " is outside [0, ",
                                                         std::numeric_limits<int>::max(), ")"));
        }
        const size_t bytes = Bytes(fp.dtype, fp.count);
        // User tags are shifted past the collectives' tag so the two never match.
        if (fp.op == CollectiveOp::kSend) {
          return p2p_->SendBuffered(args.in, bytes, fp.root, args.tag + 1, deadline);
        }
        return p2p_->Recv(args.out, bytes, fp.root, args.tag + 1, deadline);
      }
      case CollectiveOp::kBarrier:
        return DisseminationBarrier(ctx);
    }
    return absl::InvalidArgumentError(absl::StrCat("unknown collective ", fp.ToString()));
  }

  absl::StatusOr<std::unique_ptr<Backend>> Split(int color, int key, Deadline deadline) override {
    const P2PContext ctx{*p2p_, deadline, kCollectiveTag, options_.segment_bytes};
    absl::StatusOr<SplitPlan> plan =
        ExchangeSplitPlan(color, key, rank(), size(), [&](const CollectiveArgs& gather) {
          return RingAllGather(ctx, gather.in, gather.out, gather.fp.count, gather.fp.dtype);
        });
    if (!plan.ok()) return plan.status();
    absl::StatusOr<std::unique_ptr<PointToPoint>> child = p2p_->Split(plan->members, deadline);
    if (!child.ok()) return child.status();
    return MakeP2PBackend(std::move(child).value(), options_);
  }

  [[noreturn]] void Abort(int exit_code) override {
    p2p_->Abort(exit_code);
    std::abort();  // unreachable; the attribute does not carry through the virtual call
  }

 private:
  uint64_t collectives_ = 0;  // collectives run so far (Send/Recv not counted)
  std::unique_ptr<PointToPoint> p2p_;
  const P2POptions options_;
};

}  // namespace

std::unique_ptr<Backend> MakeP2PBackend(std::unique_ptr<PointToPoint> p2p, P2POptions options) {
  return std::make_unique<P2PBackend>(std::move(p2p), options);
}

}  // namespace loom::comm
