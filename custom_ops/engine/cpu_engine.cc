#include "custom_ops/engine/cpu_engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <limits>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "cblas.h"
#include "custom_ops/engine/prefix_cache.h"
#include "custom_ops/engine/row_tiling.h"
#include "custom_ops/engine/trie.h"
#include "custom_ops/engine/vector_math.h"

namespace tf_genrec {
namespace {

// Version 1 files hold float32 weights; version 2 names the dtype of the
// big matrices in a field after the magic (cpu_engine.h).
constexpr char kMagicV1[8] = {'T', 'F', 'G', 'R', 'E', 'N', 'G', '1'};
constexpr char kMagicV2[8] = {'T', 'F', 'G', 'R', 'E', 'N', 'G', '2'};
enum WeightDtype : int32_t { kFloat32 = 0, kBfloat16 = 1 };

struct Dims {
  int layers, hidden, inter, heads, kv_heads, head_dim, vocab;
  float rope_theta, eps;
  int q_width() const { return heads * head_dim; }
  int kv_width() const { return kv_heads * head_dim; }
  int qkv_width() const { return q_width() + 2 * kv_width(); }
};

// A row-major weight matrix as stored: float32, or bfloat16 (the upper half
// of a float32's bits) widened to float32 a block at a time when used.
struct Weights {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  template <typename T>
  std::vector<T>& Of();
};
template <>
std::vector<float>& Weights::Of<float>() {
  return f32;
}
template <>
std::vector<uint16_t>& Weights::Of<uint16_t>() {
  return bf16;
}

// Float32 weights have the RMSNorm weights and the attention scale folded
// into the following kernels, as tf_genrec/generation/beam_search.py does;
// bfloat16 ones cannot take them without a second rounding, so the norm
// weights scale the normalised rows (ln1, ln2 non-empty) and q_scale the
// product's q columns instead.
struct Layer {
  Weights qkv, o, gate_up, down;
  std::vector<float> qkv_bias, ln1, ln2;
  float q_scale = 1.0f;
};

struct Model {
  Dims d;
  Weights embed;  // [V, H]
  std::vector<Layer> layers;
  Weights level_heads;            // [L, K, H]
  std::vector<float> final_norm;  // empty: folded into level_heads
  std::vector<float> inv_freq;    // [D / 2] RoPE frequencies
};

// bfloat16 -> float32 is exact: the 16 bits become the upper half.
void Widen(const uint16_t* in, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = static_cast<uint32_t>(in[i]) << 16;
    std::memcpy(&out[i], &bits, sizeof(float));
  }
}

// C[m, n] = A[m, k] @ B (B [k, n] row-major with leading dim ldb, or its
// transpose [n, k] when trans_b); C += A @ B when accumulate (the residual
// adds, without a temporary).
void Gemm(int m, int n, int k, const float* a, int lda, const float* b, int ldb,
          bool trans_b, float* c, int ldc, bool accumulate = false) {
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a, lda,
                    b, ldb, accumulate ? 1.0f : 0.0f, c, ldc);
}

// x * rsqrt(mean(x^2) + eps) * weight; an empty weight is folded into the
// next kernel.
void RmsNormRow(const float* x, int h, float eps,
                const std::vector<float>& weight, float* out) {
  const float scale = 1.0f / std::sqrt(SumOfSquares(x, h) / h + eps);
  for (int i = 0; i < h; ++i) out[i] = x[i] * scale;
  if (weight.empty()) return;
  for (int i = 0; i < h; ++i) out[i] *= weight[i];
}

class FileReader {
 public:
  explicit FileReader(const std::string& filename)
      : filename_(filename), in_(filename, std::ios::binary) {}

  absl::Status status() const {
    if (!in_.is_open()) {
      return absl::NotFoundError(
          absl::StrCat("cannot open engine file ", filename_));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status Read(int64_t count, std::vector<T>* out, const char* what) {
    out->resize(count);
    in_.read(reinterpret_cast<char*>(out->data()), count * sizeof(T));
    if (!in_) {
      return absl::DataLossError(
          absl::StrCat("engine file ", filename_, " ends inside ", what));
    }
    return absl::OkStatus();
  }

  absl::Status ExpectEnd() {
    if (in_.peek() != std::char_traits<char>::eof()) {
      return absl::DataLossError(absl::StrCat(
          "engine file ", filename_, " has trailing bytes after the sids"));
    }
    return absl::OkStatus();
  }

 private:
  std::string filename_;
  std::ifstream in_;
};

#define RETURN_IF_ERROR(expr)            \
  do {                                   \
    const absl::Status _status = (expr); \
    if (!_status.ok()) return _status;   \
  } while (0)

// [rows, sum of widths]: row i of each part side by side.
template <typename T>
std::vector<T> ConcatColumns(
    int64_t rows,
    std::initializer_list<std::pair<const std::vector<T>*, int>> parts) {
  int64_t n = 0;
  for (const auto& part : parts) n += part.second;
  std::vector<T> out;
  out.reserve(rows * n);
  for (int64_t i = 0; i < rows; ++i) {
    for (const auto& [part, width] : parts) {
      out.insert(out.end(), part->begin() + i * width,
                 part->begin() + (i + 1) * width);
    }
  }
  return out;
}

// The weights after the header, their big matrices stored as T (float or
// bfloat16 bits); float32 ones get the norms folded in (Layer).
template <typename T>
absl::Status ReadWeights(FileReader& file, int64_t sid_rows, Model* model) {
  const Dims& d = model->d;
  const int64_t hd = d.hidden;
  const int qw = d.q_width(), kvw = d.kv_width();
  RETURN_IF_ERROR(file.Read(d.vocab * hd, &model->embed.Of<T>(), "embed"));
  const float q_scale = 1.0f / std::sqrt(static_cast<float>(d.head_dim));
  for (int li = 0; li < d.layers; ++li) {
    std::vector<T> q, k, v, gate, up;
    std::vector<float> qb, kb, vb;
    Layer layer;
    RETURN_IF_ERROR(file.Read(hd, &layer.ln1, "input_layernorm"));
    RETURN_IF_ERROR(file.Read(hd * qw, &q, "q_proj"));
    RETURN_IF_ERROR(file.Read(qw, &qb, "q_proj bias"));
    RETURN_IF_ERROR(file.Read(hd * kvw, &k, "k_proj"));
    RETURN_IF_ERROR(file.Read(kvw, &kb, "k_proj bias"));
    RETURN_IF_ERROR(file.Read(hd * kvw, &v, "v_proj"));
    RETURN_IF_ERROR(file.Read(kvw, &vb, "v_proj bias"));
    RETURN_IF_ERROR(file.Read(int64_t{qw} * hd, &layer.o.Of<T>(), "o_proj"));
    RETURN_IF_ERROR(file.Read(hd, &layer.ln2, "post_attention_layernorm"));
    RETURN_IF_ERROR(file.Read(hd * d.inter, &gate, "gate_proj"));
    RETURN_IF_ERROR(file.Read(hd * d.inter, &up, "up_proj"));
    RETURN_IF_ERROR(
        file.Read(int64_t{d.inter} * hd, &layer.down.Of<T>(), "down"));
    std::vector<T>& qkv = layer.qkv.Of<T>();
    std::vector<T>& gate_up = layer.gate_up.Of<T>();
    qkv = ConcatColumns<T>(hd, {{&q, qw}, {&k, kvw}, {&v, kvw}});
    gate_up = ConcatColumns<T>(hd, {{&gate, d.inter}, {&up, d.inter}});
    for (float x : qb) layer.qkv_bias.push_back(x * q_scale);
    layer.qkv_bias.insert(layer.qkv_bias.end(), kb.begin(), kb.end());
    layer.qkv_bias.insert(layer.qkv_bias.end(), vb.begin(), vb.end());
    if constexpr (std::is_same_v<T, float>) {
      const int nq = d.qkv_width();
      for (int64_t i = 0; i < hd; ++i) {
        float* row = &qkv[i * nq];
        for (int j = 0; j < qw; ++j) row[j] = layer.ln1[i] * (row[j] * q_scale);
        for (int j = qw; j < nq; ++j) row[j] *= layer.ln1[i];
        for (int j = 0; j < 2 * d.inter; ++j) {
          gate_up[i * 2 * d.inter + j] *= layer.ln2[i];
        }
      }
      layer.ln1.clear();
      layer.ln2.clear();
    } else {
      layer.q_scale = q_scale;
    }
    model->layers.push_back(std::move(layer));
  }
  RETURN_IF_ERROR(file.Read(hd, &model->final_norm, "final norm"));
  std::vector<T>& heads = model->level_heads.Of<T>();
  RETURN_IF_ERROR(file.Read(sid_rows * hd, &heads, "lm_head"));
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t r = 0; r < sid_rows; ++r) {
      for (int64_t i = 0; i < hd; ++i) {
        heads[r * hd + i] *= model->final_norm[i];
      }
    }
    model->final_norm.clear();
  }
  return absl::OkStatus();
}

absl::Status ReadModel(const std::string& filename, EngineConfig* config,
                       Model* model, std::vector<int32_t>* sids) {
  FileReader file(filename);
  RETURN_IF_ERROR(file.status());
  std::vector<char> magic;
  RETURN_IF_ERROR(file.Read(8, &magic, "the magic"));
  int32_t dtype = kFloat32;
  if (std::equal(magic.begin(), magic.end(), kMagicV2)) {
    std::vector<int32_t> field;
    RETURN_IF_ERROR(file.Read(1, &field, "the weight dtype"));
    dtype = field[0];
    if (dtype != kFloat32 && dtype != kBfloat16) {
      return absl::InvalidArgumentError(
          absl::StrCat(filename, ": weight dtype=", dtype,
                       " must be 0 (float32) or 1 (bfloat16)"));
    }
  } else if (!std::equal(magic.begin(), magic.end(), kMagicV1)) {
    return absl::InvalidArgumentError(
        absl::StrCat(filename,
                     " is not an engine file (magic \"TFGRENG1\" or "
                     "\"TFGRENG2\" expected)"));
  }
  std::vector<int32_t> h;
  RETURN_IF_ERROR(file.Read(11, &h, "the header"));
  std::vector<float> hf;
  RETURN_IF_ERROR(file.Read(2, &hf, "the header"));
  Dims& d = model->d;
  d = Dims{h[0], h[1], h[2], h[3], h[4], h[5], h[6], hf[0], hf[1]};
  const int num_levels = h[7], codebook_size = h[8], sid_offset = h[9];
  const int num_sids = h[10];
  for (int i = 0; i < 7; ++i) {
    if (h[i] < 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          filename, ": header field ", i, "=", h[i], " must be >= 1"));
    }
  }
  if (d.heads % d.kv_heads != 0 || d.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(filename, ": num_heads=", d.heads,
                     " must be a multiple of "
                     "num_kv_heads=",
                     d.kv_heads, " and head_dim=", d.head_dim, " even"));
  }
  auto mismatch = [&](const char* field, int in_file, int in_config) {
    return absl::InvalidArgumentError(
        absl::StrCat(filename, ": ", field, "=", in_file,
                     " but the engine was created "
                     "with ",
                     field, "=", in_config));
  };
  if (num_levels != config->num_levels) {
    return mismatch("num_levels", num_levels, config->num_levels);
  }
  if (codebook_size != config->codebook_size) {
    return mismatch("codebook_size", codebook_size, config->codebook_size);
  }
  if (sid_offset != config->sid_offset) {
    return mismatch("sid_offset", sid_offset, config->sid_offset);
  }
  config->vocab_size = d.vocab;
  RETURN_IF_ERROR(config->Validate());

  const int64_t sid_rows = int64_t{num_levels} * codebook_size;
  RETURN_IF_ERROR(dtype == kBfloat16
                      ? ReadWeights<uint16_t>(file, sid_rows, model)
                      : ReadWeights<float>(file, sid_rows, model));
  RETURN_IF_ERROR(
      file.Read(int64_t{num_sids} * num_levels, sids, "the semantic IDs"));
  RETURN_IF_ERROR(file.ExpectEnd());
  for (int i = 0; i < d.head_dim / 2; ++i) {
    // In double, then rounded, as the TF model computes its table.
    model->inv_freq.push_back(
        static_cast<float>(1.0 / std::pow(static_cast<double>(d.rope_theta),
                                          2.0 * i / d.head_dim)));
  }
  return absl::OkStatus();
}

// The engine's one thread pool. ParallelFor(n, fn) runs fn(0..n-1) on the
// calling thread and any free worker, and may be called from inside fn: a
// request's step is one task and its products split into column blocks that
// are tasks too, so one request alone still uses every thread. Each index
// runs on one thread start to finish, so no result depends on the pool. A
// caller runs its own job's untaken indices and then waits only for indices
// other threads hold, which finish by induction on nesting depth: no
// deadlock. An idle thread (a worker without a task, a caller waiting for
// its job's last indices) polls for up to kSpin before it sleeps: a step
// runs dozens of short jobs back to back, and a sleeping thread takes tens
// of microseconds to wake on each.
class ThreadPool {
 public:
  explicit ThreadPool(int num_threads) : num_threads_(num_threads) {
    for (int i = 1; i < num_threads; ++i) {
      workers_.emplace_back([this] { Work(); });
    }
  }

  ~ThreadPool() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (auto& w : workers_) w.join();
  }

  int num_threads() const { return num_threads_; }

  void ParallelFor(int n, const std::function<void(int)>& fn) {
    if (n <= 1 || workers_.empty()) {
      for (int i = 0; i < n; ++i) fn(i);
      return;
    }
    Job job{&fn, n};
    {
      absl::MutexLock lock(&mu_);
      jobs_.push_back(&job);
      queued_jobs_.store(jobs_.size(), std::memory_order_relaxed);
    }
    while (true) {
      int i;
      {
        absl::MutexLock lock(&mu_);
        i = Take(&job);
      }
      if (i < 0) break;
      RunIndex(&job, i);
    }
    Spin([&] { return job.done.load(std::memory_order_acquire) == n; });
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(+[](Job* j) { return j->done == j->n; }, &job));
  }

 private:
  static constexpr std::chrono::microseconds kSpin{50};

  struct Job {
    const std::function<void(int)>* fn;
    int n;
    int next = 0;  // first index not yet taken
    std::atomic<int> done = 0;
  };

  // Polls `ready` until it holds or kSpin has passed.
  template <typename Ready>
  static void Spin(Ready ready) {
    const auto until = std::chrono::steady_clock::now() + kSpin;
    while (!ready()) {
      for (int i = 0; i < 64; ++i) Pause();
      if (std::chrono::steady_clock::now() > until) return;
    }
  }

  static void Pause() {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }

  // The job's next index, or -1 if every one is taken; the last one takes
  // the job off the queue (its caller still waits for it to finish).
  int Take(Job* job) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (job->next == job->n) return -1;
    const int i = job->next++;
    if (job->next == job->n) {
      jobs_.erase(std::find(jobs_.begin(), jobs_.end(), job));
      queued_jobs_.store(jobs_.size(), std::memory_order_relaxed);
    }
    return i;
  }

  void RunIndex(Job* job, int i) {
    (*job->fn)(i);
    absl::MutexLock lock(&mu_);
    job->done.fetch_add(1, std::memory_order_release);
  }

  bool HasTask() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stop_ || !jobs_.empty();
  }

  void Work() {
    while (true) {
      Job* job;
      int i;
      Spin([this] { return queued_jobs_.load(std::memory_order_relaxed) > 0; });
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(this, &ThreadPool::HasTask));
        if (stop_) return;
        job = jobs_.front();  // the oldest job first
        i = Take(job);
      }
      RunIndex(job, i);
    }
  }

  const int num_threads_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<Job*> jobs_ ABSL_GUARDED_BY(mu_);  // jobs with untaken indices
  std::atomic<size_t> queued_jobs_ = 0;         // jobs_.size(), for Spin
  std::vector<std::thread> workers_;
};

// One request in the engine: queued, then alive for num_levels steps.
struct Active {
  RequestId id;
  GenerationRequest request;
  DoneCallback done;
  BeamSearch search;
  int prompt_len;
  // Per layer: the prompt's k and v, [P, nKV * D] each, shared by all beams,
  // and every beam's generated-token k and v, [beams, t, nKV * D].
  std::vector<std::vector<float>> prompt_k, prompt_v, beam_k, beam_v;
  int generated = 0;  // t: tokens in the beam cache
  bool prefilled = false;
  // Prefix cache: the prompt's block hashes and its cached leading blocks
  // (looked up once, at admission; copied into prompt_k/v by the prefill).
  bool looked_up = false;
  std::vector<uint64_t> block_hashes;
  std::vector<PrefixCache::BlockPtr> cached;
  int cached_len = 0;  // Prompt tokens whose K/V came from the cache.
  int rows() const {
    return prefilled ? search.num_beams() : prompt_len - cached_len;
  }
};

// One request's rows in a forward: its prompt tokens [begin, end) until it
// has prefilled, then one row per live beam (begin, end unused).
struct Part {
  Active* a;
  int begin = 0, end = 0;
  int rows() const {
    return a->prefilled ? a->search.num_beams() : end - begin;
  }
};

// A part's row positions and the RoPE cos and sin, [distinct positions,
// D / 2] from first_position on, that every layer uses.
struct PartRows {
  std::vector<int> positions;
  int first_position = 0;
  std::vector<float> cos, sin;
};

// A forward's last-layer output rows, [layout.rows, H]; part i's are rows
// layout.at[i].
struct Hidden {
  std::vector<float> x;
  RowLayout layout;
};

// Rows per matrix-product call: the largest call CalibrateRowTiling checks,
// a multiple of every tile it tries.
constexpr int kMaxCallRows = 768;
// Beam rows of the requests that share one decode forward: enough for the
// products to run near peak, few enough that their activations stay in
// cache and a step's groups keep every thread busy.
constexpr int kMaxGroupRows = 384;
// Beams from which a request runs its own decode products. Merging such a
// request gained 4% at batch 32, W=50 (4L-256H), while padding a lone one
// to whole tiles cost 7% at batch 1; at W=5 merging gains 1.4x.
constexpr int kMinOwnRows = 32;

class CpuEngine : public Engine {
 public:
  CpuEngine(const EngineConfig& config, Model model, SemanticIdTrie trie,
            std::unique_ptr<PrefixCache> cache, int num_threads)
      : Engine(config),
        model_(std::move(model)),
        trie_(std::move(trie)),
        cache_(std::move(cache)),
        pool_(num_threads),
        tiling_(CalibrateRowTiling(LayerProducts(), kMaxCallRows)) {
    thread_ = std::thread([this] { Loop(); });
  }

  ~CpuEngine() override {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    thread_.join();
    // The loop answered what was running; what is still queued is cancelled.
    for (auto& a : pending_) {
      a->done(absl::CancelledError("generation engine destroyed"));
    }
  }

  absl::StatusOr<RequestId> Enqueue(GenerationRequest request,
                                    DoneCallback done) override {
    absl::Status valid = ValidateRequest(config(), request);
    absl::MutexLock lock(&mu_);
    if (valid.ok() && queued_ >= config().max_queued_requests) {
      valid = absl::ResourceExhaustedError(absl::StrCat(
          "generation engine queue is full: max_queued_requests=",
          config().max_queued_requests, " requests are waiting or running"));
    }
    if (!valid.ok()) {
      ++stats_.requests_rejected;
      return valid;
    }
    const RequestId id = next_id_++;
    const int beam_width = request.beam_width;
    auto active = std::make_unique<Active>(
        Active{id, std::move(request), std::move(done),
               BeamSearch(&trie_, config().sid_softmax, beam_width), 0});
    active->prompt_len = active->request.prompt.size();
    pending_.push_back(std::move(active));
    ++queued_;
    ++stats_.requests_enqueued;
    return id;
  }

  void Cancel(RequestId id) override {
    absl::MutexLock lock(&mu_);
    cancelled_.insert(id);
  }

  EngineStats Stats() const override {
    absl::MutexLock lock(&mu_);
    EngineStats stats = stats_;
    stats.queued = queued_;
    stats.row_tile = tiling_.merges() ? tiling_.tile : 0;
    if (cache_ != nullptr) {
      const PrefixCacheStats c = cache_->Stats();
      stats.prefix_cache_hits = c.hits;
      stats.prefix_cache_misses = c.misses;
      stats.prefix_cache_hit_tokens = c.hit_tokens;
      stats.prefix_cache_evictions = c.evictions;
      stats.prefix_cache_bytes = c.bytes;
    }
    return stats;
  }

  std::string DebugString() const override {
    const Dims& d = model_.d;
    return absl::StrCat(
        "CpuEngine(layers=", d.layers, ", hidden=", d.hidden,
        ", num_levels=", config().num_levels,
        ", codebook_size=", config().codebook_size, ", sids=", trie_.num_sids(),
        ", weights=", model_.embed.bf16.empty() ? "float32" : "bfloat16",
        ", row_tile=", tiling_.merges() ? tiling_.tile : 0, ")");
  }

 private:
  using ActivePtr = std::unique_ptr<Active>;

  // Evaluated by whichever thread releases mu_, so it reads guarded state
  // only (running_ belongs to the scheduler thread).
  bool HasWork() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stop_ || !pending_.empty() || !cancelled_.empty();
  }

  void Loop() {
    while (true) {
      std::vector<ActivePtr> finished;  // answered outside the lock
      std::vector<absl::Status> finished_status;
      {
        absl::MutexLock lock(&mu_);
        if (running_.empty()) {
          mu_.Await(absl::Condition(this, &CpuEngine::HasWork));
        }
        if (stop_) {
          for (auto& a : running_) {
            finished_status.push_back(
                absl::CancelledError("generation engine destroyed"));
            finished.push_back(std::move(a));
          }
          running_.clear();
          queued_ -= finished.size();
        } else {
          TakeCancelled(&finished, &finished_status);
          Admit();
        }
      }
      for (size_t i = 0; i < finished.size(); ++i) {
        finished[i]->done(finished_status[i]);
      }
      {
        absl::MutexLock lock(&mu_);
        if (stop_) return;
      }
      if (!running_.empty()) RunStep();
    }
  }

  // Moves cancelled requests (queued or running) to `out`.
  void TakeCancelled(std::vector<ActivePtr>* out,
                     std::vector<absl::Status>* status)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (cancelled_.empty()) return;
    for (auto* list : {&pending_, &running_}) {
      for (auto it = list->begin(); it != list->end();) {
        if (cancelled_.contains((*it)->id)) {
          out->push_back(std::move(*it));
          status->push_back(absl::CancelledError(absl::StrCat(
              "generation request ", out->back()->id, " cancelled")));
          it = list->erase(it);
          --queued_;
          ++stats_.requests_failed;
        } else {
          ++it;
        }
      }
    }
    cancelled_.clear();
  }

  // Requests join at step boundaries while the step's tokens stay within
  // max_step_tokens (a request that fits nowhere runs alone).
  void Admit() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    int64_t tokens = 0;
    for (const auto& a : running_) tokens += a->rows();
    while (!pending_.empty()) {
      if (cache_ != nullptr && !pending_.front()->looked_up) {
        LookUpPrefix(pending_.front().get());
      }
      const int64_t need = pending_.front()->rows();
      if (!running_.empty() && tokens + need > config().max_step_tokens) {
        break;
      }
      tokens += need;
      running_.push_back(std::move(pending_.front()));
      pending_.pop_front();
    }
  }

  // At most the blocks before the prompt's last token: the prefill must
  // compute that token's output.
  void LookUpPrefix(Active* a) {
    const std::vector<int32_t>& prompt = a->request.prompt;
    a->looked_up = true;
    a->block_hashes = cache_->BlockHashes(prompt);
    a->cached = cache_->Lookup(prompt, a->block_hashes,
                               (a->prompt_len - 1) / cache_->block_tokens());
    a->cached_len = a->cached.size() * cache_->block_tokens();
  }

  // One scheduler step: every running request advances one level. A newly
  // admitted request runs its prompt and scores level 0 on its own, and so
  // does a request with kMinOwnRows or more beams (its products, unpadded,
  // already fill OpenBLAS's tiles); the other requests' beams share one
  // forward per group of up to kMaxGroupRows rows when the CPU's row tiling
  // allows it (row_tiling.h). Which way a request goes depends on its own
  // state only. Those requests and groups are the pool's tasks.
  void RunStep() {
    int64_t step_tokens = 0;
    std::vector<Active*> alone;
    std::vector<std::vector<Active*>> groups;
    int group_rows = 0;
    for (auto& a : running_) {
      step_tokens += a->rows();
      if (!a->prefilled || !tiling_.merges() || a->rows() >= kMinOwnRows) {
        alone.push_back(a.get());
        continue;
      }
      if (groups.empty() || group_rows + a->rows() > kMaxGroupRows) {
        groups.emplace_back();
        group_rows = 0;
      }
      groups.back().push_back(a.get());
      group_rows += a->rows();
    }
    std::vector<int> padding(groups.size());
    pool_.ParallelFor(alone.size() + groups.size(), [&](int i) {
      if (i >= static_cast<int>(alone.size())) {
        const int g = i - alone.size();
        padding[g] = Decode(groups[g], tiling_);
      } else if (alone[i]->prefilled) {
        Decode({alone[i]}, RowTiling{});
      } else {
        Prefill(alone[i]);
      }
    });
    int64_t padding_rows = 0;
    for (int p : padding) padding_rows += p;
    std::vector<ActivePtr> finished;
    for (auto it = running_.begin(); it != running_.end();) {
      if ((*it)->search.done()) {
        finished.push_back(std::move(*it));
        it = running_.erase(it);
      } else {
        ++it;
      }
    }
    {
      absl::MutexLock lock(&mu_);
      queued_ -= finished.size();
      ++stats_.steps;
      stats_.step_tokens += step_tokens;
      stats_.padding_rows += padding_rows;
      stats_.max_step_requests = std::max<int64_t>(
          stats_.max_step_requests, running_.size() + finished.size());
      stats_.requests_completed += finished.size();
    }
    for (auto& a : finished) a->done(a->search.Result());
  }

  // A newly admitted request's uncached prompt tokens, then its level-0
  // beam-search step.
  void Prefill(Active* a) {
    StartPrefill(a);
    // With the cache on, the prompt runs in block-aligned chunks: a block's
    // K/V then never depends on how much of the prompt was cached, so an
    // answer is the same bits hit or miss.
    const int chunk = cache_ ? cache_->block_tokens() : a->prompt_len;
    Hidden out;
    for (int begin = a->cached_len; begin < a->prompt_len; begin += chunk) {
      out = Layers({Part{a, begin, std::min(begin + chunk, a->prompt_len)}},
                   RowTiling{});
    }
    if (cache_ != nullptr) CacheBlocks(*a);
    Score(a, out, 0);
  }

  // One level of the prefilled requests in `group`, their beams' rows in one
  // forward laid out by `tiling`; returns the padding rows it computed.
  int Decode(const std::vector<Active*>& group, const RowTiling& tiling) {
    std::vector<Part> parts;
    int rows = 0;
    for (Active* a : group) {
      parts.push_back(Part{a});
      rows += parts.back().rows();
    }
    const Hidden out = Layers(parts, tiling);
    pool_.ParallelFor(group.size(), [&](int i) { Score(group[i], out, i); });
    return out.layout.rows - rows;
  }

  // Part i's output rows in `out` (the last prompt token's, or every
  // beam's) through the final norm and its level's LM head, then the
  // request's beam-search step.
  void Score(Active* a, const Hidden& out, int i) {
    const Dims& d = model_.d;
    const int h = d.hidden;
    const int m = a->search.num_beams(), k = config().codebook_size;
    std::vector<float> normed(static_cast<size_t>(m) * h);
    for (int r = 0; r < m; ++r) {
      RmsNormRow(&out.x[static_cast<size_t>(out.layout.at[i][r]) * h], h, d.eps,
                 model_.final_norm, &normed[r * h]);
    }
    std::vector<float> logits(static_cast<size_t>(m) * k);
    ParallelGemm(m, k, h, normed.data(), h, model_.level_heads,
                 static_cast<size_t>(a->search.level()) * k * h, h, true,
                 logits.data(), k);
    a->search.Step(logits.data());
    if (a->prefilled) {
      ++a->generated;
      ReorderBeams(a);
    }
    a->prefilled = true;
  }

  // Sizes the request's caches and copies its cached prompt blocks in.
  void StartPrefill(Active* a) {
    const Dims& d = model_.d;
    const size_t kvw = d.kv_width();
    for (auto* cache : {&a->prompt_k, &a->prompt_v, &a->beam_k, &a->beam_v}) {
      cache->resize(d.layers);
    }
    for (int li = 0; li < d.layers; ++li) {
      a->prompt_k[li].resize(a->prompt_len * kvw);
      a->prompt_v[li].resize(a->prompt_len * kvw);
    }
    if (a->cached.empty()) return;
    const size_t block = cache_->block_tokens() * kvw;
    for (size_t j = 0; j < a->cached.size(); ++j) {
      const float* kv = a->cached[j]->kv.data();
      for (int li = 0; li < d.layers; ++li) {
        std::copy_n(kv + 2 * li * block, block, &a->prompt_k[li][j * block]);
        std::copy_n(kv + (2 * li + 1) * block, block,
                    &a->prompt_v[li][j * block]);
      }
    }
    a->cached.clear();
  }

  // Offers the prompt's full blocks computed by this request to the cache.
  void CacheBlocks(const Active& a) {
    const int first = a.cached_len / cache_->block_tokens();
    const int full = a.prompt_len / cache_->block_tokens();
    const size_t block = cache_->block_tokens() * model_.d.kv_width();
    std::vector<std::vector<float>> kv(full > first ? full - first : 0);
    for (int j = first; j < full; ++j) {
      std::vector<float>& out = kv[j - first];
      out.reserve(cache_->block_floats());
      for (int li = 0; li < model_.d.layers; ++li) {
        for (const auto* cache : {&a.prompt_k[li], &a.prompt_v[li]}) {
          out.insert(out.end(), cache->begin() + j * block,
                     cache->begin() + (j + 1) * block);
        }
      }
    }
    if (!kv.empty()) {
      cache_->Insert(a.request.prompt, a.block_hashes, first, std::move(kv));
    }
  }

  // The decoder layers over the parts' rows, each product over all of them
  // in the rows `tiling` packs them to (row_tiling.h: a row's result then
  // depends on its own values only, which keeps every answer bit-identical
  // whatever it was batched with). Returns the last layer's output rows the
  // caller scores: every beam's, the last prompt token's for a prompt's
  // final chunk, none for an earlier chunk.
  Hidden Layers(const std::vector<Part>& parts, const RowTiling& tiling) {
    const Dims& d = model_.d;
    const int h = d.hidden, nq = d.qkv_width(), n = parts.size();
    std::vector<int> rows(n);
    for (int i = 0; i < n; ++i) rows[i] = parts[i].rows();
    RowLayout layout = PackRows(tiling, rows);
    std::vector<float> x(static_cast<size_t>(layout.rows) * h, 0.0f);
    std::vector<PartRows> part_rows(n);
    pool_.ParallelFor(n, [&](int i) {
      part_rows[i] = Embed(parts[i], layout.at[i], x.data());
    });
    std::vector<float> normed(static_cast<size_t>(layout.rows) * h);
    std::vector<float> qkv(static_cast<size_t>(layout.rows) * nq);
    for (int li = 0; li < d.layers; ++li) {
      const Layer& w = model_.layers[li];
      for (int r = 0; r < layout.rows; ++r) {
        RmsNormRow(&x[r * h], h, d.eps, w.ln1, &normed[r * h]);
      }
      ParallelGemm(layout.rows, nq, h, normed.data(), h, w.qkv, 0, nq, false,
                   qkv.data(), nq);
      // The last layer goes on with the rows the caller scores only: a
      // prompt chunk's last row if it ends the prompt, else none.
      std::vector<int> first(n, 0), kept = rows;
      for (int i = 0; li + 1 == d.layers && i < n; ++i) {
        const Part& part = parts[i];
        if (part.a->prefilled) continue;
        kept[i] = part.end == part.a->prompt_len ? 1 : 0;
        first[i] = rows[i] - kept[i];
      }
      const bool compact = kept != rows;
      RowLayout kept_layout = compact ? PackRows(tiling, kept) : layout;
      std::vector<float> attn(
          static_cast<size_t>(kept_layout.rows) * d.q_width(), 0.0f);
      pool_.ParallelFor(n, [&](int i) {
        Attend(parts[i], part_rows[i], li, layout.at[i], qkv.data(), first[i],
               kept_layout.at[i], attn.data());
      });
      if (kept_layout.rows == 0) return {};  // an earlier prompt chunk
      if (compact) {
        std::vector<float> kept_x(static_cast<size_t>(kept_layout.rows) * h,
                                  0.0f);
        for (int i = 0; i < n; ++i) {
          for (int r = 0; r < kept[i]; ++r) {
            std::copy_n(&x[static_cast<size_t>(layout.at[i][first[i] + r]) * h],
                        h,
                        &kept_x[static_cast<size_t>(kept_layout.at[i][r]) * h]);
          }
        }
        x = std::move(kept_x);
        layout = std::move(kept_layout);
      }
      AttnOutAndMlp(w, attn.data(), layout.rows, &x);
    }
    return {std::move(x), std::move(layout)};
  }

  // A part's input embeddings, written to x's rows `at`, and the positions
  // and RoPE tables its rows use in every layer.
  PartRows Embed(const Part& part, const std::vector<int>& at, float* x) {
    const Dims& d = model_.d;
    const int h = d.hidden, rows = at.size();
    const Active& a = *part.a;
    PartRows out;
    for (int r = 0; r < rows; ++r) {
      int token;
      if (a.prefilled) {
        const int level = a.search.level() - 1;  // of the code fed in
        token = config().sid_offset + level * config().codebook_size +
                a.search.code(r);
        out.positions.push_back(a.prompt_len + level);
      } else {
        token = a.request.prompt[part.begin + r];
        out.positions.push_back(part.begin + r);
      }
      const size_t from = static_cast<size_t>(token) * h;
      float* row = x + static_cast<size_t>(at[r]) * h;
      if (model_.embed.bf16.empty()) {
        std::copy_n(&model_.embed.f32[from], h, row);
      } else {
        Widen(&model_.embed.bf16[from], h, row);
      }
    }
    // The rows' positions are consecutive (a prompt chunk) or one (every
    // beam's): cos and sin per distinct position.
    const int half = d.head_dim / 2;
    out.first_position = out.positions.front();
    const int num_positions = out.positions.back() - out.first_position + 1;
    out.cos.resize(static_cast<size_t>(num_positions) * half);
    out.sin.resize(static_cast<size_t>(num_positions) * half);
    for (int j = 0; j < num_positions; ++j) {
      for (int i = 0; i < half; ++i) {
        const float angle =
            static_cast<float>(out.first_position + j) * model_.inv_freq[i];
        out.cos[j * half + i] = std::cos(angle);
        out.sin[j * half + i] = std::sin(angle);
      }
    }
    return out;
  }

  // A part's rows of one layer after the qkv product (rows `at` of qkv):
  // bias and RoPE, its k and v kept, and the attention of its rows
  // [first, rows) written to attn's rows kept_at.
  void Attend(const Part& part, const PartRows& part_rows, int li,
              const std::vector<int>& at, const float* qkv, int first,
              const std::vector<int>& kept_at, float* attn) {
    const Dims& d = model_.d;
    const Layer& w = model_.layers[li];
    const int nq = d.qkv_width(), qw = d.q_width(), half = d.head_dim / 2;
    const int rows = at.size();
    std::vector<float> own(static_cast<size_t>(rows) * nq);
    for (int r = 0; r < rows; ++r) {
      float* row = &own[static_cast<size_t>(r) * nq];
      std::copy_n(qkv + static_cast<size_t>(at[r]) * nq, nq, row);
      for (int j = 0; j < qw; ++j) row[j] = row[j] * w.q_scale + w.qkv_bias[j];
      for (int j = qw; j < nq; ++j) row[j] += w.qkv_bias[j];
      const int p = part_rows.positions[r] - part_rows.first_position;
      Rope(row, d.heads + d.kv_heads, d.head_dim, &part_rows.cos[p * half],
           &part_rows.sin[p * half]);
    }
    StoreKv(part.a, li, own.data(), part.begin, rows);
    if (first == rows) return;
    std::vector<float> out(static_cast<size_t>(rows - first) * qw);
    Attention(part.a, li, own.data(), rows, first, part.begin, part.end,
              out.data());
    for (int r = 0; r < rows - first; ++r) {
      std::copy_n(&out[static_cast<size_t>(r) * qw], qw,
                  attn + static_cast<size_t>(kept_at[r]) * qw);
    }
  }

  // Layer 0's products as the forward runs them, for CalibrateRowTiling
  // (every layer's have the same shapes, so the same kernels).
  std::vector<RowProduct> LayerProducts() {
    const Dims& d = model_.d;
    const Layer& w = model_.layers[0];
    auto product = [this](const Weights& b, int k, int n, bool accumulate) {
      return RowProduct{
          k, n, [this, &b, k, n, accumulate](int m, const float* a, float* c) {
            std::fill_n(c, static_cast<size_t>(m) * n, 0.0f);
            ParallelGemm(m, n, k, a, k, b, 0, n, false, c, n, accumulate);
          }};
    };
    return {product(w.qkv, d.hidden, d.qkv_width(), false),
            product(w.o, d.q_width(), d.hidden, true),
            product(w.gate_up, d.hidden, 2 * d.inter, false),
            product(w.down, d.inter, d.hidden, true)};
  }

  // C[m, n] = A @ B in calls of at most kMaxCallRows rows (the row counts
  // the tiling was calibrated on), each with its output columns in blocks
  // run on the pool, so a request alone uses every thread; b is the weights
  // from element b_offset on. The blocks depend on n and the engine's thread
  // count only. bfloat16 weights are widened inside the block's task, a
  // chunk of columns at a time into the thread's scratch (sized by k and
  // kScratchFloats only, so L2-resident and as request-independent as the
  // blocks): float32 compute, bfloat16 storage.
  void ParallelGemm(int m, int n, int k, const float* a, int lda,
                    const Weights& b, size_t b_offset, int ldb, bool trans_b,
                    float* c, int ldc, bool accumulate = false) {
    for (int r = 0; r < m; r += kMaxCallRows) {
      ColumnBlocks(std::min(kMaxCallRows, m - r), n, k,
                   a + static_cast<size_t>(r) * lda, lda, b, b_offset, ldb,
                   trans_b, c + static_cast<size_t>(r) * ldc, ldc, accumulate);
    }
  }

  void ColumnBlocks(int m, int n, int k, const float* a, int lda,
                    const Weights& b, size_t b_offset, int ldb, bool trans_b,
                    float* c, int ldc, bool accumulate) {
    constexpr int kMinBlockColumns = 64, kAlign = 16;
    constexpr int kScratchFloats = 128 * 1024;
    const int blocks =
        std::max(1, std::min(pool_.num_threads(), n / kMinBlockColumns));
    const int width =
        ((n + blocks - 1) / blocks + kAlign - 1) / kAlign * kAlign;
    const int chunk = std::max(kAlign, kScratchFloats / k / kAlign * kAlign);
    pool_.ParallelFor(blocks, [&](int i) {
      const int first = i * width, cols = std::min(width, n - first);
      if (cols <= 0) return;
      if (b.bf16.empty()) {
        const float* w = b.f32.data() + b_offset;
        Gemm(m, cols, k, a, lda,
             trans_b ? w + static_cast<size_t>(first) * ldb : w + first, ldb,
             trans_b, c + first, ldc, accumulate);
        return;
      }
      thread_local std::vector<float> scratch;
      scratch.resize(static_cast<size_t>(k) * chunk);
      const uint16_t* w = b.bf16.data() + b_offset;
      for (int c0 = first; c0 < first + cols; c0 += chunk) {
        const int cc = std::min(chunk, first + cols - c0);
        if (trans_b) {  // rows c0.. of [n, k]
          for (int r = 0; r < cc; ++r) {
            Widen(w + static_cast<size_t>(c0 + r) * ldb, k,
                  &scratch[static_cast<size_t>(r) * k]);
          }
          Gemm(m, cc, k, a, lda, scratch.data(), k, true, c + c0, ldc,
               accumulate);
        } else {
          for (int r = 0; r < k; ++r) {
            Widen(w + static_cast<size_t>(r) * ldb + c0, cc,
                  &scratch[static_cast<size_t>(r) * cc]);
          }
          Gemm(m, cc, k, a, lda, scratch.data(), cc, false, c + c0, ldc,
               accumulate);
        }
      }
    });
  }

  // Keeps this step's k and v: prompt rows fill their places [begin,
  // begin + rows) of the prompt cache, a beam's are appended to its beam
  // cache (already in current beam order).
  void StoreKv(Active* a, int li, const float* qkv, int begin, int rows) {
    const Dims& d = model_.d;
    const int nq = d.qkv_width(), kvw = d.kv_width();
    if (!a->prefilled) {
      float* pk = &a->prompt_k[li][static_cast<size_t>(begin) * kvw];
      float* pv = &a->prompt_v[li][static_cast<size_t>(begin) * kvw];
      for (int r = 0; r < rows; ++r) {
        const float* row = qkv + static_cast<size_t>(r) * nq;
        std::copy_n(row + d.q_width(), kvw, &pk[r * kvw]);
        std::copy_n(row + d.q_width() + kvw, kvw, &pv[r * kvw]);
      }
      return;
    }
    const int beams = a->search.num_beams(), t = a->generated;
    for (int kv = 0; kv < 2; ++kv) {
      auto& cache = kv == 0 ? a->beam_k[li] : a->beam_v[li];
      std::vector<float> grown(static_cast<size_t>(beams) * (t + 1) * kvw);
      for (int b = 0; b < beams; ++b) {
        float* dst = &grown[static_cast<size_t>(b) * (t + 1) * kvw];
        std::copy_n(&cache[static_cast<size_t>(b) * t * kvw], t * kvw, dst);
        std::copy_n(qkv + static_cast<size_t>(b) * nq + d.q_width() + kv * kvw,
                    kvw, dst + t * kvw);
      }
      cache = std::move(grown);
    }
  }

  // Attention of rows [first, rows) of this step: per kv head, the queries
  // of all its heads and rows are one matrix against the prompt keys and
  // values (computed once per request, shared by all beams; a prompt chunk
  // [begin, end) sees keys [0, end)), plus each beam's own generated keys.
  // Writes [rows - first, nH * D] to out. The kv heads are pool tasks.
  void Attention(Active* a, int li, const float* qkv, int rows, int first,
                 int begin, int end, float* out) {
    const Dims& d = model_.d;
    const int nq = d.qkv_width(), kvw = d.kv_width(), dd = d.head_dim;
    const int group = d.heads / d.kv_heads;
    const int nqr = rows - first, p = a->prefilled ? a->prompt_len : end;
    const int t = a->prefilled ? a->generated + 1 : 0;
    const int nrow = nqr * group;
    pool_.ParallelFor(d.kv_heads, [&](int kh) {
      std::vector<float> q(static_cast<size_t>(nrow) * dd);
      std::vector<float> scores(static_cast<size_t>(nrow) * (p + t));
      std::vector<float> o(static_cast<size_t>(nrow) * dd);
      for (int i = 0; i < nqr; ++i) {
        std::copy_n(qkv + static_cast<size_t>(first + i) * nq + kh * group * dd,
                    group * dd, &q[static_cast<size_t>(i) * group * dd]);
      }
      const float* pk = a->prompt_k[li].data() + kh * dd;
      const float* pv = a->prompt_v[li].data() + kh * dd;
      // scores[:, :p] = q @ prompt_k^T; beam keys follow in [p, p + t).
      Gemm(nrow, p, dd, q.data(), dd, pk, kvw, true, scores.data(), p + t);
      for (int i = 0; i < nqr; ++i) {
        // Prompt row r sees keys 0..r; a beam row all p and its t keys.
        const int visible = a->prefilled ? p : begin + first + i + 1;
        for (int g = 0; g < group; ++g) {
          const size_t row = static_cast<size_t>(i) * group + g;
          float* s = &scores[row * (p + t)];
          for (int j = 0; j < t; ++j) {
            const float* key =
                &a->beam_k[li]
                          [(static_cast<size_t>(i) * t + j) * kvw + kh * dd];
            float dot = 0.0f;
            for (int e = 0; e < dd; ++e) dot += q[row * dd + e] * key[e];
            s[p + j] = dot;
          }
          const float mx =
              Max(s + p, t,
                  Max(s, visible, -std::numeric_limits<float>::infinity()));
          const float sum =
              ExpShifted(s, visible, mx) + ExpShifted(s + p, t, mx);
          std::fill(s + visible, s + p, 0.0f);
          const float inv = 1.0f / sum;
          for (int j = 0; j < p + t; ++j) s[j] *= inv;
        }
      }
      // o = probabilities[:, :p] @ prompt_v, read in place from scores.
      Gemm(nrow, dd, p, scores.data(), p + t, pv, kvw, false, o.data(), dd);
      for (int i = 0; i < nqr; ++i) {
        for (int g = 0; g < group; ++g) {
          const size_t row = static_cast<size_t>(i) * group + g;
          float* orow = &o[row * dd];
          for (int j = 0; j < t; ++j) {
            const float pj = scores[row * (p + t) + p + j];
            const float* val =
                &a->beam_v[li]
                          [(static_cast<size_t>(i) * t + j) * kvw + kh * dd];
            for (int e = 0; e < dd; ++e) orow[e] += pj * val[e];
          }
          std::copy_n(orow, dd,
                      out + static_cast<size_t>(i) * d.q_width() +
                          (kh * group + g) * dd);
        }
      }
    });
  }

  // x[m, H] += o_proj(attn); x += down(silu(gate(norm x)) * up(norm x)).
  void AttnOutAndMlp(const Layer& w, const float* attn, int m,
                     std::vector<float>* x) {
    const Dims& d = model_.d;
    const int h = d.hidden, inter = d.inter;
    ParallelGemm(m, h, d.q_width(), attn, d.q_width(), w.o, 0, h, false,
                 x->data(), h, /*accumulate=*/true);
    std::vector<float> normed(static_cast<size_t>(m) * h);
    for (int r = 0; r < m; ++r) {
      RmsNormRow(&(*x)[r * h], h, d.eps, w.ln2, &normed[r * h]);
    }
    std::vector<float> gu(static_cast<size_t>(m) * 2 * inter);
    ParallelGemm(m, 2 * inter, h, normed.data(), h, w.gate_up, 0, 2 * inter,
                 false, gu.data(), 2 * inter);
    std::vector<float> act(static_cast<size_t>(m) * inter);
    for (int r = 0; r < m; ++r) {
      const float* g = &gu[static_cast<size_t>(r) * 2 * inter];
      SiluMul(g, g + inter, inter, &act[static_cast<size_t>(r) * inter]);
    }
    ParallelGemm(m, h, inter, act.data(), inter, w.down, 0, h, false, x->data(),
                 h, /*accumulate=*/true);
  }

  // After a step, new beam i continues old beam parent(i): its cache is the
  // parent's.
  void ReorderBeams(Active* a) {
    const int kvw = model_.d.kv_width(), t = a->generated;
    const size_t per_beam = static_cast<size_t>(t) * kvw;
    for (auto* cache : {&a->beam_k, &a->beam_v}) {
      for (auto& layer : *cache) {
        std::vector<float> reordered(a->search.num_beams() * per_beam);
        for (int i = 0; i < a->search.num_beams(); ++i) {
          std::copy_n(&layer[a->search.parent(i) * per_beam], per_beam,
                      &reordered[i * per_beam]);
        }
        layer = std::move(reordered);
      }
    }
  }

  const Model model_;
  const SemanticIdTrie trie_;
  const std::unique_ptr<PrefixCache> cache_;  // Null when off.
  mutable absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  RequestId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t queued_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<ActivePtr> pending_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<RequestId> cancelled_ ABSL_GUARDED_BY(mu_);
  EngineStats stats_ ABSL_GUARDED_BY(mu_);
  // Owned by the scheduler thread.
  std::deque<ActivePtr> running_;
  ThreadPool pool_;
  const RowTiling tiling_;  // Measured at start: how a step's rows merge.
  std::thread thread_;      // last: started after everything it uses
};

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> CreateCpuEngine(
    EngineConfig config, const std::string& filename, int num_threads) {
  Model model;
  std::vector<int32_t> sids;
  RETURN_IF_ERROR(ReadModel(filename, &config, &model, &sids));
  absl::StatusOr<SemanticIdTrie> trie =
      SemanticIdTrie::FromCodes(sids, config.num_levels, config.codebook_size);
  if (!trie.ok()) return trie.status();
  // OpenBLAS's own threads busy-wait between calls: on a loaded machine
  // each of a step's many small products then waits for a time slice
  // (measured 10-30x slower at 2 threads). So it runs single-threaded and
  // the engine's pool runs a step's requests in parallel instead.
  std::unique_ptr<PrefixCache> cache;
  if (config.prefix_cache_bytes > 0) {
    const Dims& d = model.d;
    absl::StatusOr<std::unique_ptr<PrefixCache>> created = PrefixCache::Create(
        config.prefix_cache_bytes, config.prefix_block_tokens,
        int64_t{d.layers} * 2 * config.prefix_block_tokens * d.kv_width());
    if (!created.ok()) return created.status();
    cache = *std::move(created);
  }
  scipy_openblas_set_num_threads(1);
  if (num_threads <= 0) {
    num_threads = std::max(1u, std::thread::hardware_concurrency());
  }
  return std::unique_ptr<Engine>(new CpuEngine(config, std::move(model),
                                               *std::move(trie),
                                               std::move(cache), num_threads));
}

}  // namespace tf_genrec
