// GenrecPromptAssemble: semantic-ID histories (+ optional context tokens) ->
// left-padded generator prompts.
#include <algorithm>
#include <limits>
#include <vector>

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

REGISTER_OP("GenrecPromptAssemble")
    .Input("codes: int32")
    .Input("codes_lengths: int32")
    .Input("context_ids: int32")
    .Input("context_lengths: int32")
    .Output("input_ids: int32")
    .Output("lengths: int32")
    .Attr("prefix_ids: list(int) = []")
    .Attr("separator_ids: list(int) = []")
    .Attr("suffix_ids: list(int) = []")
    .Attr("sid_offset: int >= 0")
    .Attr("codebook_size: int >= 1")
    .Attr("pad_token_id: int = 0")
    .Attr("max_prompt_len: int >= 1")
    .Attr("truncate: bool = false")
    .Attr("full_items: int >= 0 = 0")
    .Attr("old_item_levels: int >= 1 = 1")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle codes, codes_lengths, context, context_lengths;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 3, &codes));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &codes_lengths));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 2, &context));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &context_lengths));
      DimensionHandle batch = c->Dim(codes, 0);
      TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(codes_lengths, 0), &batch));
      TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(context, 0), &batch));
      TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(context_lengths, 0), &batch));
      // P is the longest prompt of the batch: known only at run time.
      c->set_output(0, c->Matrix(batch, c->UnknownDim()));
      c->set_output(1, c->Vector(batch));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Builds generator prompts from semantic-ID histories.

prompt = prefix_ids + context + SID(item_1) + separator_ids + SID(item_2) + ...
+ SID(item_n) + suffix_ids, where SID(item) is its L tokens and the token of
code c at level l is sid_offset + l * codebook_size + c. With full_items > 0
the prompt is compressed: only the last full_items items keep all L levels,
older ones their first min(old_item_levels, L) (the coarse codes).

codes: [B, T, L] history codes, oldest first; rows t < codes_lengths[b] are
  read and must be in [0, codebook_size).
codes_lengths: [B] history length per row, 0 <= codes_lengths[b] <= T.
context_ids: [B, C] extra tokens (profile, query) placed after the prefix,
  in [0, sid_offset + L * codebook_size) where read; C may be 0.
context_lengths: [B] valid context tokens per row, 0 <= context_lengths[b] <= C.
input_ids: [B, P] prompts left-padded with pad_token_id, P = longest prompt.
lengths: [B] prompt length per row.
prefix_ids: tokens that open every prompt.
separator_ids: tokens between two consecutive items.
suffix_ids: tokens that close every prompt (e.g. the generation cue).
sid_offset: id of the first semantic-ID token (code 0 at level 0).
codebook_size: K, codes per level.
pad_token_id: token used for left padding.
max_prompt_len: longest allowed prompt.
truncate: if false a longer prompt is an InvalidArgument naming the row; if
  true the oldest history items are dropped (whole items) until it fits, and
  it is an error only if it does not fit with zero items.
full_items: the most recent items written at full resolution; 0: every item.
old_item_levels: levels kept of the items before them.
)doc");

class PromptAssembleOp : public OpKernel {
 public:
  explicit PromptAssembleOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("prefix_ids", &prefix_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("separator_ids", &separator_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("suffix_ids", &suffix_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sid_offset", &sid_offset_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("codebook_size", &codebook_size_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad_token_id", &pad_token_id_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("max_prompt_len", &max_prompt_len_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("truncate", &truncate_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("full_items", &full_items_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("old_item_levels", &old_item_levels_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& codes = ctx->input(0);
    const Tensor& codes_lengths = ctx->input(1);
    const Tensor& context_ids = ctx->input(2);
    const Tensor& context_lengths = ctx->input(3);
    OP_REQUIRES(ctx, codes.dims() == 3,
                absl::InvalidArgumentError(
                    absl::StrCat("codes must be [B, T, L], got shape ",
                                 codes.shape().DebugString())));
    const int64_t batch = codes.dim_size(0);
    const int64_t num_items = codes.dim_size(1);
    const int64_t num_levels = codes.dim_size(2);
    OP_REQUIRES(ctx, num_levels >= 1,
                absl::InvalidArgumentError(
                    absl::StrCat("codes must have L >= 1 levels, got "
                                 "shape ",
                                 codes.shape().DebugString())));
    // The largest token must fit in int32_t (divided, not multiplied: a
    // zero-size codes tensor may declare any L).
    OP_REQUIRES(
        ctx,
        num_levels <= (std::numeric_limits<int32_t>::max() - sid_offset_) /
                          codebook_size_,
        absl::InvalidArgumentError(absl::StrCat(
            "sid_offset=", sid_offset_, " + L=", num_levels,
            " * codebook_size=", codebook_size_, " overflows int32")));
    const int64_t vocab_size = sid_offset_ + num_levels * codebook_size_;
    OP_REQUIRES(ctx,
                codes_lengths.dims() == 1 && codes_lengths.dim_size(0) == batch,
                absl::InvalidArgumentError(absl::StrCat(
                    "codes_lengths must be [B=", batch, "], got shape ",
                    codes_lengths.shape().DebugString())));
    OP_REQUIRES(ctx,
                context_ids.dims() == 2 && context_ids.dim_size(0) == batch,
                absl::InvalidArgumentError(absl::StrCat(
                    "context_ids must be [B=", batch, ", C], got shape ",
                    context_ids.shape().DebugString())));
    const int64_t context_width = context_ids.dim_size(1);
    OP_REQUIRES(
        ctx,
        context_lengths.dims() == 1 && context_lengths.dim_size(0) == batch,
        absl::InvalidArgumentError(
            absl::StrCat("context_lengths must be [B=", batch, "], got shape ",
                         context_lengths.shape().DebugString())));
    auto hist_len = codes_lengths.vec<int32_t>();
    auto ctx_len = context_lengths.vec<int32_t>();
    auto codes_t = codes.tensor<int32_t, 3>();
    auto context = context_ids.matrix<int32_t>();

    // Pass 1: validate and decide how many items each row keeps.
    const int64_t fixed = prefix_.size() + suffix_.size();
    const int64_t sep_len = separator_.size();
    // The newest `full` items cost L tokens each, older ones `old_levels`.
    const int64_t full = full_items_ > 0 ? full_items_ : num_items;
    const int64_t old_levels = std::min<int64_t>(old_item_levels_, num_levels);
    std::vector<int64_t> first_item(batch), prompt_len(batch);
    int64_t longest = 0;
    for (int64_t b = 0; b < batch; ++b) {
      OP_REQUIRES(ctx, hist_len(b) >= 0 && hist_len(b) <= num_items,
                  absl::InvalidArgumentError(
                      absl::StrCat("codes_lengths[", b, "]=", hist_len(b),
                                   " is outside [0, T=", num_items, "]")));
      OP_REQUIRES(ctx, ctx_len(b) >= 0 && ctx_len(b) <= context_width,
                  absl::InvalidArgumentError(
                      absl::StrCat("context_lengths[", b, "]=", ctx_len(b),
                                   " is outside [0, C=", context_width, "]")));
      for (int32_t t = 0; t < hist_len(b); ++t) {
        for (int64_t l = 0; l < num_levels; ++l) {
          const int32_t code = codes_t(b, t, l);
          OP_REQUIRES(
              ctx, code >= 0 && code < codebook_size_,
              absl::InvalidArgumentError(absl::StrCat(
                  "codes[", b, ",", t, ",", l, "]=", code,
                  " is outside [0, codebook_size=", codebook_size_, ")")));
        }
      }
      for (int32_t i = 0; i < ctx_len(b); ++i) {
        OP_REQUIRES(ctx, context(b, i) >= 0 && context(b, i) < vocab_size,
                    absl::InvalidArgumentError(absl::StrCat(
                        "context_ids[", b, ",", i, "]=", context(b, i),
                        " is outside the vocabulary [0, sid_offset + L * "
                        "codebook_size=",
                        vocab_size, ")")));
      }
      const int64_t base = fixed + ctx_len(b);
      // The newest n items cost their levels + (n - 1) * |separator| tokens.
      auto length_with = [&](int64_t n) {
        if (n == 0) return base;
        const int64_t n_full = std::min(n, full);
        return base + n_full * num_levels + (n - n_full) * old_levels +
               (n - 1) * sep_len;
      };
      int64_t n = hist_len(b);
      if (length_with(n) > max_prompt_len_) {
        OP_REQUIRES(ctx, truncate_,
                    absl::InvalidArgumentError(absl::StrCat(
                        "prompt of row ", b, " has length ", length_with(n),
                        " (", n, " items, ", ctx_len(b),
                        " context tokens) > max_prompt_len=", max_prompt_len_,
                        "; set truncate=True to drop the oldest items")));
        OP_REQUIRES(
            ctx, base <= max_prompt_len_,
            absl::InvalidArgumentError(absl::StrCat(
                "prompt of row ", b, " has length ", base,
                " without any history item (", ctx_len(b),
                " context tokens) > max_prompt_len=", max_prompt_len_)));
        // The largest n that fits: first among full items, then old ones.
        n = std::min(
            full, (max_prompt_len_ - base + sep_len) / (num_levels + sep_len));
        if (n == full) {
          n += (max_prompt_len_ - length_with(n)) / (old_levels + sep_len);
        }
      }
      first_item[b] = hist_len(b) - n;
      prompt_len[b] = length_with(n);
      longest = std::max(longest, prompt_len[b]);
    }

    Tensor* input_ids = nullptr;
    Tensor* lengths = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({batch, longest}),
                                             &input_ids));
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_output(1, TensorShape({batch}), &lengths));
    int32_t* out = input_ids->flat<int32_t>().data();
    auto out_len = lengths->vec<int32_t>();

    // Pass 2: write the tokens.
    auto assemble_rows = [&](int64_t begin, int64_t end) {
      for (int64_t b = begin; b < end; ++b) {
        int32_t* row = out + b * longest;
        int32_t* p = std::fill_n(row, longest - prompt_len[b], pad_token_id_);
        p = std::copy(prefix_.begin(), prefix_.end(), p);
        for (int32_t i = 0; i < ctx_len(b); ++i) *p++ = context(b, i);
        for (int64_t t = first_item[b]; t < hist_len(b); ++t) {
          if (t > first_item[b]) {
            p = std::copy(separator_.begin(), separator_.end(), p);
          }
          const int64_t levels =
              hist_len(b) - t <= full ? num_levels : old_levels;
          for (int64_t l = 0; l < levels; ++l) {
            *p++ = static_cast<int32_t>(sid_offset_ + l * codebook_size_ +
                                        codes_t(b, t, l));
          }
        }
        std::copy(suffix_.begin(), suffix_.end(), p);
        out_len(b) = static_cast<int32_t>(prompt_len[b]);
      }
    };
    auto* workers = ctx->device()->tensorflow_cpu_worker_threads();
    Shard(workers->num_threads, workers->workers, batch,
          /*cost_per_unit=*/std::max<int64_t>(longest, 1), assemble_rows);
  }

 private:
  std::vector<int32_t> prefix_;
  std::vector<int32_t> separator_;
  std::vector<int32_t> suffix_;
  int64_t sid_offset_;
  int64_t codebook_size_;
  int32_t pad_token_id_;
  int64_t max_prompt_len_;
  bool truncate_;
  int64_t full_items_;
  int64_t old_item_levels_;
};

REGISTER_KERNEL_BUILDER(Name("GenrecPromptAssemble").Device(DEVICE_CPU),
                        PromptAssembleOp);

}  // namespace
}  // namespace tensorflow
