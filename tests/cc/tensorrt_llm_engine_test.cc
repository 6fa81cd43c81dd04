// Tests of the TensorRT-LLM backend (everything but the executor binding)
// through FakeExecutor; built and run by tests/test_engine_tensorrt_llm.py.
// The references are independent of the backend: tf_genrec::BeamSearch
// (trie.h) and, where the beam is wide enough to be exact, a brute-force
// ranking of every semantic ID, both driven by the same toy model.
#include "custom_ops/engine/tensorrt_llm/tensorrt_llm_engine.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "custom_ops/engine/tensorrt_llm/trie_logits_processor.h"
#include "custom_ops/engine/trie.h"
#include "tests/cc/fake_executor.h"

namespace tf_genrec {
namespace {

int failures = 0;
#define EXPECT(cond, ...)                                                    \
  do {                                                                       \
    if (!(cond)) {                                                           \
      ++failures;                                                            \
      std::fprintf(stderr, "%s:%d: FAILED %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                     \
      std::fprintf(stderr, "\n");                                            \
    }                                                                        \
  } while (0)

constexpr int32_t kEndId = 1;
constexpr int kSidOffset = 4;

// Deterministic logits: a hash of the whole history and the token.
void ToyModel(int vocab, const std::vector<int32_t>& history, float* logits) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : history)
    h = (h ^ static_cast<uint32_t>(t)) * 1099511628211ull;
  for (int v = 0; v < vocab; ++v) {
    uint64_t x = (h ^ (static_cast<uint64_t>(v) * 0x9E3779B97F4A7C15ull));
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    logits[v] = static_cast<float>(x % 100000) / 12500.0f - 4.0f;
  }
}

struct Case {
  EngineConfig config;
  SemanticIdTrie trie;
  std::vector<int32_t> sids;  // [n, L]
};

Case RandomCase(std::mt19937* rng, int levels, int k, int num_sids,
                int max_beam_width) {
  std::vector<int32_t> codes(num_sids * levels);
  for (int32_t& c : codes) c = (*rng)() % k;
  Case c{EngineConfig{}, *SemanticIdTrie::FromCodes(codes, levels, k), codes};
  c.config.num_levels = levels;
  c.config.codebook_size = k;
  c.config.sid_offset = kSidOffset;
  c.config.vocab_size = kSidOffset + levels * k + 2;
  c.config.max_beam_width = max_beam_width;
  c.config.max_prompt_len = 16;
  c.config.sid_softmax = SidSoftmax::kTrie;
  return c;
}

LogitsModel Model(const EngineConfig& config) {
  const int vocab = config.vocab_size;
  return [vocab](const std::vector<int32_t>& h, float* l) {
    ToyModel(vocab, h, l);
  };
}

std::unique_ptr<TensorRtLlmEngine> MakeEngine(const Case& c,
                                              FakeExecutorOptions fake = {},
                                              FakeExecutor** out = nullptr) {
  fake.vocab_size = c.config.vocab_size;
  auto executor = std::make_unique<FakeExecutor>(Model(c.config), fake);
  if (out) *out = executor.get();
  TensorRtLlmOptions options;
  options.end_id = kEndId;
  auto engine =
      TensorRtLlmEngine::Create(c.config, c.trie, std::move(executor), options);
  if (!engine.ok()) {
    std::fprintf(stderr, "Create: %s\n", engine.status().ToString().c_str());
    std::abort();
  }
  return *std::move(engine);
}

// tf_genrec::BeamSearch over the same model's level logits.
GenerationResult Reference(const Case& c, const std::vector<int32_t>& prompt,
                           int width) {
  const int k = c.config.codebook_size;
  BeamSearch search(&c.trie, SidSoftmax::kTrie, width);
  std::vector<std::vector<int32_t>> histories{prompt};
  std::vector<float> full(c.config.vocab_size);
  while (!search.done()) {
    const int level = search.level();
    std::vector<float> logits(histories.size() * k);
    for (size_t b = 0; b < histories.size(); ++b) {
      ToyModel(c.config.vocab_size, histories[b], full.data());
      std::copy_n(full.begin() + kSidOffset + level * k, k, &logits[b * k]);
    }
    search.Step(logits.data());
    std::vector<std::vector<int32_t>> next;
    for (int i = 0; i < search.num_beams(); ++i) {
      next.push_back(histories[search.parent(i)]);
      next.back().push_back(kSidOffset + level * k + search.code(i));
    }
    histories = std::move(next);
  }
  return search.Result();
}

// Every distinct SID scored by the chain of trie-normalised level log-probs,
// best first (exact top-W when the beam never has to drop a prefix).
std::vector<std::pair<float, std::vector<int32_t>>> BruteForce(
    const Case& c, const std::vector<int32_t>& prompt) {
  const int levels = c.config.num_levels, k = c.config.codebook_size;
  std::vector<std::vector<int32_t>> sids;
  for (size_t i = 0; i < c.sids.size(); i += levels) {
    sids.emplace_back(c.sids.begin() + i, c.sids.begin() + i + levels);
  }
  std::sort(sids.begin(), sids.end());
  sids.erase(std::unique(sids.begin(), sids.end()), sids.end());
  std::vector<std::pair<float, std::vector<int32_t>>> out;
  std::vector<float> full(c.config.vocab_size);
  for (const auto& sid : sids) {
    std::vector<int32_t> history = prompt;
    float score = 0;
    for (int l = 0; l < levels; ++l) {
      ToyModel(c.config.vocab_size, history, full.data());
      // Children of the prefix sid[0..l): codes of SIDs sharing it.
      std::vector<int32_t> children;
      for (const auto& other : sids) {
        if (std::equal(sid.begin(), sid.begin() + l, other.begin())) {
          children.push_back(other[l]);
        }
      }
      std::sort(children.begin(), children.end());
      children.erase(std::unique(children.begin(), children.end()),
                     children.end());
      double sum = 0;
      for (int32_t ch : children)
        sum += std::exp(full[kSidOffset + l * k + ch]);
      score +=
          full[kSidOffset + l * k + sid[l]] - static_cast<float>(std::log(sum));
      history.push_back(kSidOffset + l * k + sid[l]);
    }
    out.emplace_back(score, sid);
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return a.first > b.first;
  });
  return out;
}

absl::StatusOr<GenerationResult> Run(TensorRtLlmEngine* engine,
                                     std::vector<int32_t> prompt, int width) {
  std::promise<absl::StatusOr<GenerationResult>> promise;
  auto future = promise.get_future();
  absl::StatusOr<RequestId> id =
      engine->Enqueue({std::move(prompt), width},
                      [&promise](absl::StatusOr<GenerationResult> r) {
                        promise.set_value(std::move(r));
                      });
  if (!id.ok()) return id.status();
  return future.get();
}

void ExpectSame(const GenerationResult& got, const GenerationResult& want,
                const std::string& what) {
  EXPECT(got.codes == want.codes, "%s: codes differ", what.c_str());
  EXPECT(got.scores.size() == want.scores.size(), "%s", what.c_str());
  for (size_t i = 0; i < got.scores.size() && i < want.scores.size(); ++i) {
    const bool both_inf =
        std::isinf(got.scores[i]) && std::isinf(want.scores[i]);
    EXPECT(both_inf || std::abs(got.scores[i] - want.scores[i]) < 1e-4,
           "%s: score %zu %g vs %g", what.c_str(), i, got.scores[i],
           want.scores[i]);
  }
}

std::vector<int32_t> RandomPrompt(std::mt19937* rng,
                                  const EngineConfig& config) {
  std::vector<int32_t> prompt(1 + (*rng)() % config.max_prompt_len);
  for (int32_t& t : prompt) t = (*rng)() % config.vocab_size;
  return prompt;
}

void TestExactness() {
  std::mt19937 rng(7);
  int cases = 0;
  for (int trial = 0; trial < 6; ++trial) {
    const int levels = 2 + trial % 3, k = 4 + trial * 3;
    for (int num_sids : {3, 40, 300}) {
      Case c = RandomCase(&rng, levels, k, num_sids, 64);
      auto engine = MakeEngine(c);
      for (int width : {1, 5, 50}) {
        for (int p = 0; p < 3; ++p) {
          std::vector<int32_t> prompt = RandomPrompt(&rng, c.config);
          const std::string what =
              "L=" + std::to_string(levels) + " K=" + std::to_string(k) +
              " n=" + std::to_string(num_sids) + " W=" + std::to_string(width);
          absl::StatusOr<GenerationResult> got =
              Run(engine.get(), prompt, width);
          EXPECT(got.ok(), "%s: %s", what.c_str(),
                 got.status().ToString().c_str());
          if (!got.ok()) continue;
          ExpectSame(*got, Reference(c, prompt, width),
                     what + " vs BeamSearch");
          auto all = BruteForce(c, prompt);
          // The beam is exact when it never has to drop a prefix.
          if (width >= static_cast<int>(all.size())) {
            for (int i = 0; i < width; ++i) {
              const bool have = i < static_cast<int>(all.size());
              for (int l = 0; l < levels; ++l) {
                EXPECT(got->codes[i * levels + l] ==
                           (have ? all[i].second[l] : -1),
                       "%s vs brute force: beam %d", what.c_str(), i);
              }
              EXPECT(have ? std::abs(got->scores[i] - all[i].first) < 1e-4
                          : std::isinf(got->scores[i]),
                     "%s vs brute force: score %d", what.c_str(), i);
            }
          }
          ++cases;
        }
      }
    }
  }
  std::printf("exactness: %d cases\n", cases);
}

void TestProcessorMask() {
  std::mt19937 rng(3);
  Case c = RandomCase(&rng, 3, 8, 20, 8);
  const int stride = c.config.vocab_size + 5;
  const std::vector<int32_t> prompt{2, 3};
  TrieLogitsProcessor processor(&c.trie, c.config, prompt.size());
  // Beam 0: a valid first code; beam 1: a prefix outside the trie.
  std::vector<int32_t> valid = prompt;
  valid.push_back(kSidOffset + c.sids[0]);
  int32_t missing = -1;
  for (int code = 0; code < 8 && missing < 0; ++code) {
    if (c.trie.Child(0, 0, code) < 0) missing = code;
  }
  std::vector<std::vector<int32_t>> beams{valid};
  if (missing >= 0)
    beams.push_back(prompt), beams.back().push_back(kSidOffset + missing);
  std::vector<float> logits(beams.size() * stride, 1.0f);
  EXPECT(processor.Apply(logits.data(), beams.size(), stride, beams).ok(),
         "Apply");
  const int32_t node = c.trie.Child(0, 0, c.sids[0]);
  float mass = 0;
  for (int v = 0; v < stride; ++v) {
    const int code = v - kSidOffset - 8;
    const bool child =
        code >= 0 && code < 8 && c.trie.Child(1, node, code) >= 0;
    EXPECT(std::isfinite(logits[v]) == child, "token %d finite iff a child", v);
    if (child) mass += std::exp(logits[v]);
  }
  EXPECT(std::abs(mass - 1) < 1e-5, "children's row is normalised: %g", mass);
  if (beams.size() == 2) {
    EXPECT(std::count_if(logits.begin() + stride, logits.end(),
                         [](float x) { return std::isfinite(x); }) == 1,
           "a dead beam keeps exactly one finite logit");
  }
  std::vector<std::vector<int32_t>> too_long{valid};
  too_long[0].insert(too_long[0].end(), {kSidOffset, kSidOffset});
  EXPECT(!processor.Apply(logits.data(), 1, stride, too_long).ok(),
         "a beam past the last level is an error");
}

void TestRefusals() {
  std::mt19937 rng(5);
  Case c = RandomCase(&rng, 2, 6, 10, 8);
  TensorRtLlmOptions options;
  options.end_id = kEndId;
  auto create = [&](EngineConfig config, int executor_width) {
    FakeExecutorOptions fake;
    fake.vocab_size = config.vocab_size;
    fake.max_beam_width = executor_width;
    return TensorRtLlmEngine::Create(
        config, c.trie, std::make_unique<FakeExecutor>(Model(config), fake),
        options);
  };
  EngineConfig level = c.config;
  level.sid_softmax = SidSoftmax::kLevel;
  auto s = create(level, 256).status();
  EXPECT(absl::IsFailedPrecondition(s) &&
             s.message().find("sid_softmax=\"trie\"") != std::string::npos,
         "level mode refused: %s", s.ToString().c_str());
  EngineConfig wide = c.config;
  wide.max_beam_width = 257;
  s = create(wide, 1024).status();
  EXPECT(absl::IsFailedPrecondition(s) &&
             s.message().find("max_beam_width=257") != std::string::npos &&
             s.message().find("256") != std::string::npos,
         "W_max 257 refused: %s", s.ToString().c_str());
  wide.max_beam_width = 256;
  EXPECT(create(wide, 256).ok(), "W_max 256 accepted");
  s = create(wide, 64).status();
  EXPECT(absl::IsFailedPrecondition(s) &&
             s.message().find("max beam width 64") != std::string::npos,
         "W_max above the built engine's refused: %s", s.ToString().c_str());
  options.end_id = kSidOffset;
  s = create(c.config, 256).status();
  EXPECT(absl::IsInvalidArgument(s) &&
             s.message().find("end_id=4") != std::string::npos,
         "end_id inside the SID range refused: %s", s.ToString().c_str());
}

void TestQueueFullAndErrors() {
  std::mt19937 rng(11);
  Case c = RandomCase(&rng, 3, 6, 30, 8);
  c.config.max_queued_requests = 3;
  FakeExecutorOptions slow;
  slow.step_delay = std::chrono::milliseconds(20);
  slow.fail_token = 0;
  auto engine = MakeEngine(c, slow);
  std::atomic<int> answered{0};
  std::vector<absl::Status> statuses(3);
  for (int i = 0; i < 3; ++i) {
    auto id = engine->Enqueue({{i == 0 ? 0 : 5, 6}, 2},
                              [&, i](absl::StatusOr<GenerationResult> r) {
                                statuses[i] = r.status();
                                ++answered;
                              });
    EXPECT(id.ok(), "enqueue %d", i);
  }
  auto full = engine->Enqueue({{5}, 2}, [](absl::StatusOr<GenerationResult>) {
    std::fprintf(stderr, "a refused request must not be answered\n");
    std::abort();
  });
  EXPECT(absl::IsResourceExhausted(full.status()) &&
             full.status().message().find("max_queued_requests=3") !=
                 std::string::npos,
         "full queue: %s", full.status().ToString().c_str());
  EXPECT(engine->Stats().requests_rejected == 1, "rejected counted");
  auto bad = engine->Enqueue({{5}, 9}, nullptr);
  EXPECT(absl::IsInvalidArgument(bad.status()),
         "beam_width 9 > W_max 8 refused");
  while (answered < 3)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT(absl::IsInternal(statuses[0]) &&
             statuses[0].message().find("TensorRT-LLM executor") !=
                 std::string::npos,
         "error response mapped: %s", statuses[0].ToString().c_str());
  EXPECT(statuses[1].ok() && statuses[2].ok(), "the others succeed");
  EXPECT(engine->Stats().requests_completed == 2 &&
             engine->Stats().requests_failed == 1,
         "stats");
  // An executor refusing enqueueRequest answers the request with its error.
  FakeExecutorOptions refuse;
  refuse.fail_enqueue = true;
  auto refusing = MakeEngine(c, refuse);
  auto r = Run(refusing.get(), {5}, 2);
  EXPECT(absl::IsInternal(r.status()), "enqueue error: %s",
         r.status().ToString().c_str());
}

void TestCancel() {
  std::mt19937 rng(13);
  Case c = RandomCase(&rng, 4, 6, 50, 8);
  FakeExecutorOptions slow;
  slow.step_delay = std::chrono::milliseconds(30);
  auto engine = MakeEngine(c, slow);
  std::promise<absl::Status> running, waiting;
  auto id1 =
      engine->Enqueue({{5, 6}, 4}, [&](absl::StatusOr<GenerationResult> r) {
        running.set_value(r.status());
      });
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  // Another width waits until the first group drains.
  auto id2 =
      engine->Enqueue({{5, 6}, 2}, [&](absl::StatusOr<GenerationResult> r) {
        waiting.set_value(r.status());
      });
  engine->Cancel(*id2);
  engine->Cancel(*id1);
  engine->Cancel(12345);  // Unknown: ignored.
  const absl::Status s1 = running.get_future().get(),
                     s2 = waiting.get_future().get();
  EXPECT(absl::IsCancelled(s1), "running request cancelled: %s",
         s1.ToString().c_str());
  EXPECT(absl::IsCancelled(s2), "waiting request cancelled: %s",
         s2.ToString().c_str());
  auto after = Run(engine.get(), {5, 6}, 3);
  EXPECT(after.ok(), "engine still serves after cancellations");
}

void TestDestroyWhileBusy() {
  std::mt19937 rng(17);
  Case c = RandomCase(&rng, 4, 8, 200, 16);
  for (int round = 0; round < 3; ++round) {
    FakeExecutorOptions slow;
    slow.step_delay = std::chrono::milliseconds(5);
    auto engine = MakeEngine(c, slow);
    std::atomic<int> answered{0}, ok{0}, cancelled{0};
    const int n = 40;
    for (int i = 0; i < n; ++i) {
      auto id = engine->Enqueue({RandomPrompt(&rng, c.config), 1 + i % 3 * 7},
                                [&](absl::StatusOr<GenerationResult> r) {
                                  ++answered;
                                  if (r.ok()) ++ok;
                                  if (absl::IsCancelled(r.status()))
                                    ++cancelled;
                                });
      EXPECT(id.ok(), "enqueue");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10 * round));
    const auto start = std::chrono::steady_clock::now();
    engine.reset();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    EXPECT(answered == n && ok + cancelled == n,
           "every callback once: %d answered, %d ok, %d cancelled",
           answered.load(), ok.load(), cancelled.load());
    EXPECT(cancelled > 0, "destroyed while busy (round %d)", round);
    EXPECT(seconds < 2.0, "destruction took %.2f s", seconds);
    std::printf("destroy while busy: %d ok, %d cancelled, %.3f s\n", ok.load(),
                cancelled.load(), seconds);
    EXPECT(FakeExecutor::live_requests == 0, "%d executor requests leaked",
           FakeExecutor::live_requests.load());
  }
}

void TestMixedWidthsBatchInvariant() {
  std::mt19937 rng(19);
  Case c = RandomCase(&rng, 3, 10, 400, 64);
  struct Call {
    std::vector<int32_t> prompt;
    int width;
  };
  std::vector<Call> calls;
  for (int i = 0; i < 48; ++i) {
    calls.push_back(
        {RandomPrompt(&rng, c.config), std::vector<int>{1, 5, 50, 5}[i % 4]});
  }
  std::vector<GenerationResult> alone;
  {
    auto engine = MakeEngine(c);
    for (const Call& call : calls)
      alone.push_back(*Run(engine.get(), call.prompt, call.width));
  }
  FakeExecutor* fake = nullptr;
  FakeExecutorOptions slow;
  slow.step_delay = std::chrono::milliseconds(1);
  auto engine = MakeEngine(c, slow, &fake);
  std::vector<std::thread> threads;
  std::vector<absl::StatusOr<GenerationResult>> together(calls.size());
  for (size_t t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (size_t i = t; i < calls.size(); i += 8) {
        together[i] = Run(engine.get(), calls[i].prompt, calls[i].width);
      }
    });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT(together[i].ok(), "call %zu", i);
    if (!together[i].ok()) continue;
    EXPECT(together[i]->codes == alone[i].codes &&
               together[i]->scores == alone[i].scores,
           "call %zu (W=%d) differs from the call alone", i, calls[i].width);
  }
  EXPECT(fake->mixed_width_iterations() == 0,
         "%d executor iterations mixed widths", fake->mixed_width_iterations());
  EXPECT(fake->max_requests_per_iteration() > 1,
         "requests of one width were batched (%d)",
         fake->max_requests_per_iteration());
  std::printf("mixed widths: %zu calls, up to %d per executor iteration\n",
              calls.size(), fake->max_requests_per_iteration());
}

}  // namespace
}  // namespace tf_genrec

int main() {
  tf_genrec::TestProcessorMask();
  tf_genrec::TestRefusals();
  tf_genrec::TestExactness();
  tf_genrec::TestQueueFullAndErrors();
  tf_genrec::TestCancel();
  tf_genrec::TestDestroyWhileBusy();
  tf_genrec::TestMixedWidthsBatchInvariant();
  if (tf_genrec::failures) {
    std::printf("%d FAILURES\n", tf_genrec::failures);
    return 1;
  }
  std::printf("ALL PASSED\n");
  return 0;
}
