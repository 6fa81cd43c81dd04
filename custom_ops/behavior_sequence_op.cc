// GenrecBehaviorSequence: raw behaviour events -> a cleaned, time-ordered,
// de-duplicated and truncated click history per request.
#include <algorithm>
#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;

REGISTER_OP("GenrecBehaviorSequence")
    .Input("item_ids: int64")
    .Input("timestamps: int64")
    .Input("action_types: int32")
    .Input("lengths: int32")
    .Input("request_time: int64")
    .Output("history: int64")
    .Output("history_lengths: int32")
    .Output("num_dropped: int32")
    .Attr("allowed_action_types: list(int) = []")
    .Attr("max_age_seconds: int = 0")
    .Attr("dedup_mode: {'none', 'consecutive', 'keep_last'} = 'keep_last'")
    .Attr("max_len: int >= 1")
    .Attr("rollover: int >= 1 = 1")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle events, lengths, request_time, other;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 2, &events));
      TF_RETURN_IF_ERROR(c->Merge(events, c->input(1), &events));
      TF_RETURN_IF_ERROR(c->Merge(events, c->input(2), &events));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &lengths));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(4), 1, &request_time));
      DimensionHandle batch = c->Dim(events, 0);
      TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(lengths, 0), &batch));
      TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(request_time, 0), &batch));
      int64_t max_len;
      TF_RETURN_IF_ERROR(c->GetAttr("max_len", &max_len));
      c->set_output(0, c->Matrix(batch, max_len));
      c->set_output(1, c->Vector(batch));
      c->set_output(2, c->Vector(batch));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Cleans raw behaviour events into a click history per request.

For row b only events t < lengths[b] are read. An event is kept when
item_ids[b,t] >= 0 (negative ids are missing values), timestamps[b,t] <=
request_time[b] (future events are dropped), its action type is allowed, and
it is not older than max_age_seconds. Kept events are ordered by timestamp
(stable, so ties keep their input order), de-duplicated, and the most recent
max_len are returned oldest first.

item_ids: [B, T] item ids of the events.
timestamps: [B, T] event times in seconds.
action_types: [B, T] action type per event (click, cart, ...).
lengths: [B] number of valid events per row, 0 <= lengths[b] <= T.
request_time: [B] request time in seconds; the reference for age and future.
history: [B, max_len] cleaned item ids, oldest first, right-padded with -1.
history_lengths: [B] number of items in history[b].
num_dropped: [B] lengths[b] - history_lengths[b]: the valid events removed by
  any filter, by de-duplication or by truncation to max_len.
allowed_action_types: action types to keep; empty keeps every type.
max_age_seconds: drop events with request_time - timestamp > max_age_seconds
  (computed exactly for any int64 values); 0 means no age limit.
dedup_mode: "none" keeps repeats; "consecutive" collapses runs of the same item
  in the filtered, time-ordered events to one; "keep_last" keeps only the most
  recent event of each item.
max_len: maximum history length; the most recent events are kept.
rollover: truncation to max_len drops the oldest events rollover at a time
  (1: a window sliding by one event). A history of c > max_len cleaned
  events keeps its newest max_len - rollover + 1 + (c - max_len - 1) %
  rollover, so the oldest kept event (and the prompt's start) changes only
  every rollover events, which keeps a prompt prefix cacheable across
  requests. 1 <= rollover <= max_len.
)doc");

enum class DedupMode { kNone, kConsecutive, kKeepLast };

// now - ts for ts <= now, exact over the whole int64 range: the difference is
// in [0, 2^64 - 1], which uint64 holds (int64 subtraction would overflow for
// e.g. ts = INT64_MIN), and unsigned wrap-around is defined.
uint64_t Age(int64_t now, int64_t ts) {
  return static_cast<uint64_t>(now) - static_cast<uint64_t>(ts);
}

class BehaviorSequenceOp : public OpKernel {
 public:
  explicit BehaviorSequenceOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::vector<int32_t> allowed;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("allowed_action_types", &allowed));
    allowed_.insert(allowed.begin(), allowed.end());
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_age_seconds", &max_age_seconds_));
    OP_REQUIRES(ctx, max_age_seconds_ >= 0,
                absl::InvalidArgumentError(
                    absl::StrCat("max_age_seconds=", max_age_seconds_,
                                 " must be >= 0 (0 = no limit)")));
    std::string mode;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dedup_mode", &mode));
    dedup_ = mode == "none"          ? DedupMode::kNone
             : mode == "consecutive" ? DedupMode::kConsecutive
                                     : DedupMode::kKeepLast;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_len", &max_len_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("rollover", &rollover_));
    OP_REQUIRES(ctx, rollover_ <= max_len_,
                absl::InvalidArgumentError(absl::StrCat(
                    "rollover=", rollover_, " must be <= max_len=", max_len_)));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& item_ids = ctx->input(0);
    const Tensor& timestamps = ctx->input(1);
    const Tensor& action_types = ctx->input(2);
    const Tensor& lengths = ctx->input(3);
    const Tensor& request_time = ctx->input(4);
    OP_REQUIRES(ctx, item_ids.dims() == 2,
                absl::InvalidArgumentError(
                    absl::StrCat("item_ids must be [B, T], got shape ",
                                 item_ids.shape().DebugString())));
    OP_REQUIRES(ctx, timestamps.shape() == item_ids.shape(),
                absl::InvalidArgumentError(absl::StrCat(
                    "timestamps shape ", timestamps.shape().DebugString(),
                    " != item_ids shape ", item_ids.shape().DebugString())));
    OP_REQUIRES(ctx, action_types.shape() == item_ids.shape(),
                absl::InvalidArgumentError(absl::StrCat(
                    "action_types shape ", action_types.shape().DebugString(),
                    " != item_ids shape ", item_ids.shape().DebugString())));
    const int64_t batch = item_ids.dim_size(0);
    const int64_t num_events = item_ids.dim_size(1);
    OP_REQUIRES(ctx, lengths.dims() == 1 && lengths.dim_size(0) == batch,
                absl::InvalidArgumentError(
                    absl::StrCat("lengths must be [B=", batch, "], got shape ",
                                 lengths.shape().DebugString())));
    OP_REQUIRES(ctx,
                request_time.dims() == 1 && request_time.dim_size(0) == batch,
                absl::InvalidArgumentError(absl::StrCat(
                    "request_time must be [B=", batch, "], got shape ",
                    request_time.shape().DebugString())));
    auto lengths_v = lengths.vec<int32_t>();
    for (int64_t b = 0; b < batch; ++b) {
      OP_REQUIRES(ctx, lengths_v(b) >= 0 && lengths_v(b) <= num_events,
                  absl::InvalidArgumentError(
                      absl::StrCat("lengths[", b, "]=", lengths_v(b),
                                   " is outside [0, T=", num_events, "]")));
    }

    Tensor* history = nullptr;
    Tensor* history_lengths = nullptr;
    Tensor* num_dropped = nullptr;
    OP_REQUIRES_OK(
        ctx, ctx->allocate_output(0, TensorShape({batch, max_len_}), &history));
    OP_REQUIRES_OK(
        ctx, ctx->allocate_output(1, TensorShape({batch}), &history_lengths));
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_output(2, TensorShape({batch}), &num_dropped));

    auto ids = item_ids.matrix<int64_t>();
    auto ts = timestamps.matrix<int64_t>();
    auto actions = action_types.matrix<int32_t>();
    auto now = request_time.vec<int64_t>();
    auto out = history->matrix<int64_t>();
    auto out_len = history_lengths->vec<int32_t>();
    auto dropped = num_dropped->vec<int32_t>();

    auto clean_rows = [&](int64_t begin, int64_t end) {
      std::vector<int32_t> kept;  // event indices, reused across rows
      kept.reserve(num_events);
      absl::flat_hash_set<int64_t> seen;
      for (int64_t b = begin; b < end; ++b) {
        kept.clear();
        bool sorted = true;
        for (int32_t t = 0; t < lengths_v(b); ++t) {
          if (ids(b, t) < 0 || ts(b, t) > now(b)) continue;
          if (max_age_seconds_ > 0 &&
              Age(now(b), ts(b, t)) > static_cast<uint64_t>(max_age_seconds_))
            continue;
          if (!allowed_.empty() && !allowed_.contains(actions(b, t))) continue;
          if (!kept.empty() && ts(b, kept.back()) > ts(b, t)) sorted = false;
          kept.push_back(t);
        }
        // Logs are usually already time-ordered; only sort when they are not.
        if (!sorted) {
          std::stable_sort(kept.begin(), kept.end(), [&](int32_t x, int32_t y) {
            return ts(b, x) < ts(b, y);
          });
        }
        // Walk newest -> oldest so keep_last and truncation see recency first;
        // with rollover, on to the oldest to count the cleaned events.
        int64_t n = 0, count = 0;
        seen.clear();
        for (auto it = kept.rbegin();
             it != kept.rend() && (n < max_len_ || rollover_ > 1); ++it) {
          const int64_t item = ids(b, *it);
          if (dedup_ == DedupMode::kKeepLast && !seen.insert(item).second)
            continue;
          // A run of one item collapses to its oldest event: skip an event
          // whose older neighbour has the same item.
          if (dedup_ == DedupMode::kConsecutive &&
              std::next(it) != kept.rend() && ids(b, *std::next(it)) == item)
            continue;
          if (n < max_len_) out(b, max_len_ - 1 - n++) = item;  // right-aligned
          ++count;
        }
        if (count > max_len_) {
          n = max_len_ - rollover_ + 1 + (count - max_len_ - 1) % rollover_;
        }
        // Move the newest n items to the front (oldest first), pad with -1.
        for (int64_t i = 0; i < n; ++i) out(b, i) = out(b, max_len_ - n + i);
        for (int64_t i = n; i < max_len_; ++i) out(b, i) = -1;
        out_len(b) = static_cast<int32_t>(n);
        dropped(b) = lengths_v(b) - static_cast<int32_t>(n);
      }
    };
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
    Shard(workers->num_threads, workers->workers, batch,
          /*cost_per_unit=*/50 * std::max<int64_t>(num_events, 1), clean_rows);
  }

 private:
  absl::flat_hash_set<int32_t> allowed_;
  int64_t max_age_seconds_;
  DedupMode dedup_;
  int64_t max_len_;
  int64_t rollover_;
};

REGISTER_KERNEL_BUILDER(Name("GenrecBehaviorSequence").Device(DEVICE_CPU),
                        BehaviorSequenceOp);

}  // namespace
}  // namespace tensorflow
