// The GenerationEngine resource and its ops: GenrecGenerationEngine (handle),
// GenrecGenerationEngineInit (from the SavedModel's engine asset),
// GenrecGenerationEngineStats and GenrecGenerate (an AsyncOpKernel: each row
// becomes one engine request; the kernel finishes when the last row answers).
#include <algorithm>
#include <atomic>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "custom_ops/engine/cpu_engine.h"
#include "custom_ops/engine/engine.h"
#include "custom_ops/engine/engine_registry.h"
#include "tensorflow/core/framework/cancellation.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace tensorflow {
namespace {

using shape_inference::DimensionHandle;
using shape_inference::InferenceContext;
using shape_inference::ShapeHandle;
using tf_genrec::Engine;
using tf_genrec::EngineConfig;

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr int kNumStats = 15;  // GenrecGenerationEngineStats' counters

// The CPU backend is in this library; the others register from their own.
const bool kCpuBackendRegistered =
    tf_genrec::RegisterEngineBackend("cpu", tf_genrec::CreateCpuEngine);

std::string MissingBackendHint(const std::string& backend) {
  if (backend == "tensorrt_llm") {
    return "load the op library _tf_genrec_tensorrt_llm_ops.so first "
           "(tf_genrec.ops does when it is installed; it is built on a GPU "
           "machine with TensorRT-LLM 1.2.x, docs/tensorrt_llm.md)";
  }
  return "no op library loaded provides it";
}

// Holds one engine backend; created empty by the handle op, given its
// engine by the init op, and destroyed (joining the engine's threads) when
// the SavedModel version that owns it unloads.
class GenerationEngineResource : public ResourceBase {
 public:
  GenerationEngineResource(const std::string& backend,
                           const EngineConfig& config, int num_threads)
      : backend_(backend), config_(config), num_threads_(num_threads) {}

  std::string DebugString() const override {
    absl::ReaderMutexLock lock(&mu_);
    return engine_ ? engine_->DebugString()
                   : absl::StrCat("GenerationEngine(", backend_,
                                  ", not initialised)");
  }

  const std::string& backend() const { return backend_; }
  const EngineConfig& config() const { return config_; }

  // Loads the engine file. Loading the same file again (a SavedModel loaded
  // twice into one process) is a no-op.
  absl::Status Init(const std::string& filename) {
    absl::MutexLock lock(&mu_);
    if (engine_ != nullptr) {
      if (filename == filename_) return absl::OkStatus();
      return absl::FailedPreconditionError(
          absl::StrCat("generation engine was initialised from ", filename_,
                       ", not ", filename));
    }
    absl::StatusOr<std::unique_ptr<Engine>> engine =
        tf_genrec::CreateEngine(backend_, config_, filename, num_threads_,
                                MissingBackendHint(backend_));
    if (!engine.ok()) return engine.status();
    engine_ = *std::move(engine);
    filename_ = filename;
    return absl::OkStatus();
  }

  absl::StatusOr<Engine*> engine() const {
    absl::ReaderMutexLock lock(&mu_);
    if (engine_ == nullptr) {
      return absl::FailedPreconditionError(
          "generation engine is not initialised; run its init op "
          "(GenrecGenerationEngineInit) first");
    }
    return engine_.get();
  }

 private:
  const std::string backend_;
  const EngineConfig config_;
  const int num_threads_;
  mutable absl::Mutex mu_;
  std::unique_ptr<Engine> engine_ ABSL_GUARDED_BY(mu_);
  std::string filename_ ABSL_GUARDED_BY(mu_);
};

REGISTER_OP("GenrecGenerationEngine")
    .Output("engine: resource")
    .Attr("backend: {'cpu', 'tensorrt_llm'} = 'cpu'")
    .Attr("num_levels: int >= 1")
    .Attr("codebook_size: int >= 1")
    .Attr("sid_offset: int >= 0")
    .Attr("max_beam_width: int >= 1")
    .Attr("max_prompt_len: int >= 1")
    .Attr("sid_softmax: {'level', 'trie'} = 'level'")
    .Attr("max_queued_requests: int >= 1 = 1024")
    .Attr("max_step_tokens: int >= 1 = 8192")
    .Attr("num_threads: int >= 0 = 0")
    .Attr("prefix_cache_bytes: int >= 0 = 0")
    .Attr("prefix_block_tokens: int >= 1 = 16")
    .Attr("container: string = ''")
    .Attr("shared_name: string = ''")
    .SetIsStateful()
    .SetShapeFn(shape_inference::ScalarShape)
    .Doc(R"doc(
Creates an empty generation engine; GenrecGenerationEngineInit loads it.

backend: the engine implementation ("cpu": custom_ops/engine/cpu_engine.h,
  "tensorrt_llm": docs/tensorrt_llm.md, registered by its own op library).
num_levels, codebook_size, sid_offset: the semantic-ID vocabulary (L codes
  per ID, K per level, token of code c at level l = sid_offset + l*K + c);
  the engine file must agree.
max_beam_width: W_max (<= 1024); max_prompt_len: longest accepted prompt.
sid_softmax: per-level normalisation the model was trained with.
max_queued_requests: rows waiting or running at once; more is
  RESOURCE_EXHAUSTED. max_step_tokens: tokens per scheduler step.
num_threads: threads running a step's requests in parallel (0: one per
  core); OpenBLAS itself is set single-threaded.
prefix_cache_bytes: prefix K/V cache across requests, in bytes (0: off;
  custom_ops/engine/prefix_cache.h); prefix_block_tokens: its block size.
)doc");

class GenerationEngineOp : public ResourceOpKernel<GenerationEngineResource> {
 public:
  explicit GenerationEngineOp(OpKernelConstruction* ctx)
      : ResourceOpKernel<GenerationEngineResource>(ctx) {
    std::string sid_softmax;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("backend", &backend_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_levels", &config_.num_levels));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("codebook_size", &config_.codebook_size));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sid_offset", &config_.sid_offset));
    OP_REQUIRES_OK(ctx,
                   ctx->GetAttr("max_beam_width", &config_.max_beam_width));
    OP_REQUIRES_OK(ctx,
                   ctx->GetAttr("max_prompt_len", &config_.max_prompt_len));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sid_softmax", &sid_softmax));
    OP_REQUIRES_OK(
        ctx, ctx->GetAttr("max_queued_requests", &config_.max_queued_requests));
    OP_REQUIRES_OK(ctx,
                   ctx->GetAttr("max_step_tokens", &config_.max_step_tokens));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_threads", &num_threads_));
    OP_REQUIRES_OK(
        ctx, ctx->GetAttr("prefix_cache_bytes", &config_.prefix_cache_bytes));
    OP_REQUIRES_OK(
        ctx, ctx->GetAttr("prefix_block_tokens", &config_.prefix_block_tokens));
    absl::StatusOr<tf_genrec::SidSoftmax> mode =
        tf_genrec::ParseSidSoftmax(sid_softmax);
    OP_REQUIRES_OK(ctx, mode.status());
    config_.sid_softmax = *mode;
    OP_REQUIRES(
        ctx, config_.max_beam_width <= 1024,
        absl::InvalidArgumentError(absl::StrCat(
            "max_beam_width=", config_.max_beam_width, " must be <= 1024")));
  }

 private:
  absl::Status CreateResource(GenerationEngineResource** resource) override
      TF_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    *resource = new GenerationEngineResource(backend_, config_, num_threads_);
    return absl::OkStatus();
  }

  absl::Status VerifyResource(GenerationEngineResource* resource) override {
    const EngineConfig& c = resource->config();
    if (resource->backend() != backend_ || c.num_levels != config_.num_levels ||
        c.codebook_size != config_.codebook_size ||
        c.sid_offset != config_.sid_offset ||
        c.max_beam_width != config_.max_beam_width) {
      return absl::InvalidArgumentError(
          absl::StrCat("shared generation engine ", resource->DebugString(),
                       " does not match this op's attributes"));
    }
    return absl::OkStatus();
  }

  std::string backend_;
  EngineConfig config_;
  int num_threads_;
};

REGISTER_KERNEL_BUILDER(Name("GenrecGenerationEngine").Device(DEVICE_CPU),
                        GenerationEngineOp);

absl::Status ScalarInputs(InferenceContext* c) {
  ShapeHandle scalar;
  for (int i = 0; i < c->num_inputs(); ++i) {
    TF_RETURN_IF_ERROR(c->WithRank(c->input(i), 0, &scalar));
  }
  return absl::OkStatus();
}

REGISTER_OP("GenrecGenerationEngineInit")
    .Input("engine: resource")
    .Input("filename: string")
    .SetIsStateful()
    .SetShapeFn(ScalarInputs)
    .Doc(R"doc(
Loads the engine asset into the engine and starts it: for "cpu" the engine
file (format: custom_ops/engine/cpu_engine.h), for "tensorrt_llm" the engine
directory (custom_ops/engine/tensorrt_llm/engine_assets.h). Its num_levels,
codebook_size and sid_offset must equal the engine's attributes; a mismatch
or a truncated file is an error naming the field. Initialising again from the same filename is a no-op.
)doc");

class GenerationEngineInitOp : public OpKernel {
 public:
  using OpKernel::OpKernel;

  void Compute(OpKernelContext* ctx) override {
    core::RefCountPtr<GenerationEngineResource> engine;
    OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, 0), &engine));
    const Tensor& filename = ctx->input(1);
    OP_REQUIRES(ctx, TensorShapeUtils::IsScalar(filename.shape()),
                absl::InvalidArgumentError(
                    absl::StrCat("filename must be a scalar, got shape ",
                                 filename.shape().DebugString())));
    OP_REQUIRES_OK(ctx, engine->Init(filename.scalar<tstring>()()));
  }
};

REGISTER_KERNEL_BUILDER(Name("GenrecGenerationEngineInit").Device(DEVICE_CPU),
                        GenerationEngineInitOp);

// num_stats defaults to the 13 counters the op had first, so SavedModels
// exported then still load (their graphs record a [13] output).
REGISTER_OP("GenrecGenerationEngineStats")
    .Input("engine: resource")
    .Output("stats: int64")
    .Attr("num_stats: int = 13")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle scalar;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 0, &scalar));
      int num_stats;
      TF_RETURN_IF_ERROR(c->GetAttr("num_stats", &num_stats));
      c->set_output(0, c->Vector(num_stats));
      return absl::OkStatus();
    })
    .Doc(R"doc(
The engine's first num_stats counters of [requests_enqueued,
requests_completed, requests_failed, requests_rejected, steps, step_tokens,
max_step_requests, queued, prefix_cache_hits, prefix_cache_misses,
prefix_cache_hit_tokens, prefix_cache_evictions, prefix_cache_bytes,
row_tile, padding_rows] (tf_genrec::EngineStats).
)doc");

class GenerationEngineStatsOp : public OpKernel {
 public:
  explicit GenerationEngineStatsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_stats", &num_stats_));
    OP_REQUIRES(
        ctx, num_stats_ >= 1 && num_stats_ <= kNumStats,
        absl::InvalidArgumentError(absl::StrCat(
            "num_stats=", num_stats_, " must be in [1, ", kNumStats, "]")));
  }

  void Compute(OpKernelContext* ctx) override {
    core::RefCountPtr<GenerationEngineResource> resource;
    OP_REQUIRES_OK(ctx,
                   LookupResource(ctx, HandleFromInput(ctx, 0), &resource));
    absl::StatusOr<Engine*> engine = resource->engine();
    OP_REQUIRES_OK(ctx, engine.status());
    const tf_genrec::EngineStats s = (*engine)->Stats();
    Tensor* out;
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_output(0, TensorShape({num_stats_}), &out));
    auto v = out->vec<int64_t>();
    const int64_t values[kNumStats] = {s.requests_enqueued,
                                       s.requests_completed,
                                       s.requests_failed,
                                       s.requests_rejected,
                                       s.steps,
                                       s.step_tokens,
                                       s.max_step_requests,
                                       s.queued,
                                       s.prefix_cache_hits,
                                       s.prefix_cache_misses,
                                       s.prefix_cache_hit_tokens,
                                       s.prefix_cache_evictions,
                                       s.prefix_cache_bytes,
                                       s.row_tile,
                                       s.padding_rows};
    for (int i = 0; i < num_stats_; ++i) v(i) = values[i];
  }

 private:
  int num_stats_;
};

REGISTER_KERNEL_BUILDER(Name("GenrecGenerationEngineStats").Device(DEVICE_CPU),
                        GenerationEngineStatsOp);

REGISTER_OP("GenrecGenerate")
    .Input("engine: resource")
    .Input("input_ids: int32")
    .Input("lengths: int32")
    .Input("beam_width: int32")
    .Output("codes: int32")
    .Output("scores: float")
    .Attr("num_levels: int >= 1")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle scalar, ids, lengths, widths;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 0, &scalar));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &ids));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(2), 1, &lengths));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 1, &widths));
      DimensionHandle batch = c->Dim(ids, 0);
      TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(lengths, 0), &batch));
      TF_RETURN_IF_ERROR(c->Merge(batch, c->Dim(widths, 0), &batch));
      int num_levels;
      TF_RETURN_IF_ERROR(c->GetAttr("num_levels", &num_levels));
      c->set_output(0, c->MakeShape({batch, c->UnknownDim(), num_levels}));
      c->set_output(1, c->MakeShape({batch, c->UnknownDim()}));
      return absl::OkStatus();
    })
    .Doc(R"doc(
Top semantic IDs per prompt row, generated by the engine (the generator
contract of DEVELOPERS.md).

input_ids: [B, P] prompts, left-padded. lengths: [B] in [1, P].
beam_width: [B] per-row widths in [1, max_beam_width].
codes: [B, W, L], W = max(beam_width); row b's first beam_width[b] beams are
  its own beam_width[b]-wide search, best first; -1 past them or where fewer
  IDs are reachable.
scores: [B, W] log-probabilities, -inf where codes are -1.
)doc");

class GenerateOp : public AsyncOpKernel {
 public:
  explicit GenerateOp(OpKernelConstruction* ctx) : AsyncOpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("num_levels", &num_levels_));
  }

  void ComputeAsync(OpKernelContext* ctx, DoneCallback done) override {
    core::RefCountPtr<GenerationEngineResource> resource;
    OP_REQUIRES_OK_ASYNC(
        ctx, LookupResource(ctx, HandleFromInput(ctx, 0), &resource), done);
    absl::StatusOr<Engine*> engine_or = resource->engine();
    OP_REQUIRES_OK_ASYNC(ctx, engine_or.status(), done);
    Engine* engine = *engine_or;
    const Tensor& ids = ctx->input(1);
    const Tensor& lengths = ctx->input(2);
    const Tensor& widths = ctx->input(3);
    OP_REQUIRES_ASYNC(
        ctx, ids.dims() == 2,
        absl::InvalidArgumentError(absl::StrCat(
            "input_ids must be [B, P], got shape ", ids.shape().DebugString())),
        done);
    const int64_t batch = ids.dim_size(0), width = ids.dim_size(1);
    OP_REQUIRES_ASYNC(ctx,
                      lengths.dims() == 1 && widths.dims() == 1 &&
                          lengths.dim_size(0) == batch &&
                          widths.dim_size(0) == batch,
                      absl::InvalidArgumentError(absl::StrCat(
                          "lengths ", lengths.shape().DebugString(),
                          " and beam_width ", widths.shape().DebugString(),
                          " must be [B] with B=", batch, " (input_ids rows)")),
                      done);
    OP_REQUIRES_ASYNC(
        ctx, num_levels_ == engine->config().num_levels,
        absl::InvalidArgumentError(absl::StrCat(
            "num_levels=", num_levels_,
            " but the engine has num_levels=", engine->config().num_levels)),
        done);
    auto len = lengths.vec<int32_t>();
    auto w = widths.vec<int32_t>();
    int32_t max_width = batch > 0 ? 1 : 0;
    // Every row is checked before anything is allocated or queued.
    for (int64_t b = 0; b < batch; ++b) {
      OP_REQUIRES_ASYNC(ctx, len(b) >= 1 && len(b) <= width,
                        absl::InvalidArgumentError(absl::StrCat(
                            "lengths[", b, "]=", len(b),
                            " must be in [1, input_ids.shape[1]=", width, "]")),
                        done);
      OP_REQUIRES_ASYNC(
          ctx, w(b) >= 1 && w(b) <= engine->config().max_beam_width,
          absl::InvalidArgumentError(absl::StrCat(
              "beam_width[", b, "]=", w(b), " must be in [1, max_beam_width=",
              engine->config().max_beam_width, "] (set at export)")),
          done);
      max_width = std::max(max_width, w(b));
    }
    Tensor* codes;
    Tensor* scores;
    OP_REQUIRES_OK_ASYNC(
        ctx,
        ctx->allocate_output(0, TensorShape({batch, max_width, num_levels_}),
                             &codes),
        done);
    OP_REQUIRES_OK_ASYNC(
        ctx, ctx->allocate_output(1, TensorShape({batch, max_width}), &scores),
        done);
    codes->flat<int32_t>().setConstant(-1);
    scores->flat<float>().setConstant(kNegInf);
    if (batch == 0) {
      done();
      return;
    }

    // Shared by the row callbacks; the last one to finish calls done().
    struct Call {
      OpKernelContext* ctx;
      DoneCallback done;
      Engine* engine;
      int32_t* codes;
      float* scores;
      int max_width, num_levels;
      std::atomic<int64_t> pending;
      absl::Mutex mu;
      std::vector<tf_genrec::RequestId> ids;
      CancellationToken token = CancellationManager::kInvalidToken;
      void Finish() {
        if (pending.fetch_sub(1) != 1) return;
        if (token != CancellationManager::kInvalidToken) {
          ctx->cancellation_manager()->DeregisterCallback(token);
        }
        DoneCallback d = std::move(done);
        delete this;
        d();
      }
    };
    Call* call = new Call{ctx,
                          std::move(done),
                          engine,
                          codes->flat<int32_t>().data(),
                          scores->flat<float>().data(),
                          max_width,
                          num_levels_,
                          {batch + 1}};  // +1: released after queueing
    auto ids_mat = ids.matrix<int32_t>();
    for (int64_t b = 0; b < batch; ++b) {
      tf_genrec::GenerationRequest request;
      request.beam_width = w(b);
      request.prompt.assign(&ids_mat(b, width - len(b)),
                            &ids_mat(b, 0) + width);
      absl::StatusOr<tf_genrec::RequestId> id = engine->Enqueue(
          std::move(request),
          [call, b](absl::StatusOr<tf_genrec::GenerationResult> result) {
            if (!result.ok()) {
              absl::MutexLock lock(&call->mu);  // SetStatus is not atomic
              call->ctx->SetStatus(absl::Status(
                  result.status().code(),
                  absl::StrCat("row ", b, ": ", result.status().message())));
            } else {
              const int l = call->num_levels;
              std::copy(result->codes.begin(), result->codes.end(),
                        call->codes + b * call->max_width * l);
              std::copy(result->scores.begin(), result->scores.end(),
                        call->scores + b * call->max_width);
            }
            call->Finish();
          });
      if (!id.ok()) {
        // Rows already queued are cancelled; rows not queued never answer.
        ctx->SetStatus(
            absl::Status(id.status().code(),
                         absl::StrCat("row ", b, ": ", id.status().message())));
        {
          absl::MutexLock lock(&call->mu);
          for (tf_genrec::RequestId queued : call->ids) engine->Cancel(queued);
        }
        call->pending.fetch_sub(batch - b);
        call->Finish();
        return;
      }
      absl::MutexLock lock(&call->mu);
      call->ids.push_back(*id);
    }
    CancellationManager* cm = ctx->cancellation_manager();
    if (cm != nullptr) {
      const CancellationToken token = cm->get_cancellation_token();
      const bool registered = cm->RegisterCallback(token, [call]() {
        absl::MutexLock lock(&call->mu);
        for (tf_genrec::RequestId id : call->ids) call->engine->Cancel(id);
      });
      if (registered) {
        call->token = token;
      } else {
        for (tf_genrec::RequestId id : call->ids) engine->Cancel(id);
      }
    }
    call->Finish();
  }

 private:
  int num_levels_;
};

REGISTER_KERNEL_BUILDER(Name("GenrecGenerate").Device(DEVICE_CPU), GenerateOp);

}  // namespace
}  // namespace tensorflow
