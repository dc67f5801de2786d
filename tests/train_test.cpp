// SPDX-License-Identifier: MIT
// Training at the model level (relpos/training.hpp, spec §6): the loss and the gradient of every
// tensor of a model file against PyTorch autograd (tools/golden_train.py, float64, on committed
// model folders of tests/data/models), in double and float; the same bits for any thread count;
// TrainableModel's parameters, rebuild and saved folder; and relpos-train grad, its file and its
// one-line errors that leave nothing behind.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <relpos/io/safetensors.hpp>
#include <relpos/io/safetensors_writer.hpp>
#include <relpos/model.hpp>
#include <relpos/threads.hpp>
#include <relpos/training.hpp>

#include "support/golden.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using relpos::Index;
using relpos::Tensor3;
using relpos::Vector;

const fs::path kTrainData = fs::path(RELPOS_TEST_DATA_DIR) / "train";
const fs::path kTrainModels = fs::path(RELPOS_TEST_DATA_DIR) / "models";

// tools/golden_train.py's CASES: each names its model folder in the files' metadata.
const char* const kTrainCases[] = {
    "learned_head_ce", "none_head_ce",         "t5_mse",    "rotary_mse",        "rotary_ids_mse",
    "absolute_mse",    "additive_learned_mse", "alibi_mse", "sinusoidal_kv_mse", "xl_mse",
    "kerple_power_mse"};

fs::path train_model_of(const std::string& name) {
  const auto f =
      relpos::io::SafetensorsFile::open((kTrainData / name / "expected.safetensors").string());
  return kTrainModels / f.metadata().at("model");
}

// Against torch's float64 autograd. Double: the same sums in another order, a few ulps of
// values of size ~1, so 1e-9 leaves room and still catches any wrong term. Float: the weights
// and inputs are exact, every product rounds (relative 6e-8) over two layers of a few dozen
// terms each; 1e-4 of the tensor's largest entry (atol) and 1e-4 relative.
template <class T>
::testing::AssertionResult train_close(const Vector<T>& actual, const Vector<double>& expected) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << actual.size() << " elements, expected " << expected.size();
  }
  if constexpr (std::is_same_v<T, double>) {
    return relpos::test::all_close(actual, expected, 1e-9, 1e-9);
  } else {
    const double scale = expected.size() > 0 ? expected.cwiseAbs().maxCoeff() : 0.0;
    return relpos::test::all_close(actual.template cast<double>(), expected, 1e-4 * scale, 1e-4);
  }
}

Vector<double> train_expected(const relpos::io::SafetensorsFile& f, const std::string& name) {
  const std::vector<double> v = f.values<double>(name);
  return Eigen::Map<const Vector<double>>(v.data(), static_cast<Index>(v.size()));
}

template <class T>
class TrainTyped : public ::testing::Test {};
using TrainScalars = ::testing::Types<float, double>;
TYPED_TEST_SUITE(TrainTyped, TrainScalars);

TYPED_TEST(TrainTyped, LossAndEveryGradientMatchTorch) {
  using T = TypeParam;
  for (const std::string name : kTrainCases) {
    SCOPED_TRACE(name);
    const auto model = relpos::Model<T>::load(train_model_of(name));
    const auto in =
        relpos::io::SafetensorsFile::open((kTrainData / name / "input.safetensors").string());
    const auto want =
        relpos::io::SafetensorsFile::open((kTrainData / name / "expected.safetensors").string());
    const relpos::TrainingData<T> data = relpos::read_training_data<T>(in, model.config());
    relpos::Gradients<T> grads;
    const T loss = relpos::loss_and_gradients(model, data.batch(), grads);
    const double want_loss = want.values<double>("loss").at(0);
    const double tol = std::is_same_v<T, double> ? 1e-9 : 1e-4;
    EXPECT_NEAR(static_cast<double>(loss), want_loss, tol * (1 + std::abs(want_loss)));
    // every tensor of the model file, by name and shape, and nothing else
    std::size_t expected_grads = 0;
    for (const std::string& n : want.names())
      expected_grads += n.starts_with("grad.") && n != "grad.input";
    ASSERT_EQ(grads.tensors.size(), expected_grads);
    for (const relpos::NamedTensor<T>& g : grads.tensors) {
      SCOPED_TRACE(g.name);
      ASSERT_TRUE(want.contains("grad." + g.name));
      EXPECT_EQ(g.shape, want.info("grad." + g.name).shape);
      EXPECT_TRUE(train_close<T>(g.values, train_expected(want, "grad." + g.name)));
    }
    ASSERT_EQ(grads.input.has_value(), want.contains("grad.input"));
    if (grads.input) {
      const Vector<T> gi = Eigen::Map<const Vector<T>>(grads.input->data(), grads.input->size());
      EXPECT_TRUE(train_close<T>(gi, train_expected(want, "grad.input")));
    }
  }
}

// Items run in parallel, each into gradients of its own summed in item order: the same bits
// for 1 and 3 threads (batch 3 and 2).
TEST(TrainThreads, GradientsAreBitIdenticalForAnyThreadCount) {
  const int before = relpos::num_threads();
  for (const std::string name : {"learned_head_ce", "rotary_mse", "t5_mse"}) {
    SCOPED_TRACE(name);
    const auto model = relpos::Model<float>::load(train_model_of(name));
    const auto in =
        relpos::io::SafetensorsFile::open((kTrainData / name / "input.safetensors").string());
    const auto data = relpos::read_training_data<float>(in, model.config());
    relpos::Gradients<float> one, three;
    relpos::set_num_threads(1);
    const float loss1 = relpos::loss_and_gradients(model, data.batch(), one);
    relpos::set_num_threads(3);
    const float loss3 = relpos::loss_and_gradients(model, data.batch(), three);
    EXPECT_EQ(loss1, loss3);
    ASSERT_EQ(one.tensors.size(), three.tensors.size());
    for (std::size_t n = 0; n < one.tensors.size(); ++n) {
      EXPECT_TRUE(one.tensors[n].values == three.tensors[n].values) << one.tensors[n].name;
    }
  }
  relpos::set_num_threads(before);
}

// Every position type of the list has a backward now (deberta's is checked at the encoder,
// tests/deberta_grad_test.cpp): the model-level entry refuses none of them at compile time.
static_assert(relpos::detail::attention_backward_supported<relpos::XlRelative<double>>);
static_assert(relpos::detail::attention_backward_supported<relpos::KerpleBias<double>>);
static_assert(relpos::detail::attention_backward_supported<relpos::DebertaRelative<double>>);

TEST(Train, MalformedBatchesAreErrorsNamingTheTensor) {
  const auto model = relpos::Model<double>::load(kTrainModels / "none_ids_head");
  relpos::TokenIds ids = relpos::TokenIds::Zero(2, 3), targets = relpos::TokenIds::Zero(2, 3);
  Tensor3<double> target(2, 3, 16);
  target.setZero();
  const auto message = [&](const relpos::TrainingBatch<double>& b) {
    relpos::Gradients<double> g;
    try {
      relpos::loss_and_gradients(model, b, g);
    } catch (const relpos::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  relpos::TrainingBatch<double> both{.input_ids = &ids, .targets = &targets, .target = &target};
  EXPECT_NE(message(both).find("both \"targets\" and \"target\""), std::string::npos);
  relpos::TrainingBatch<double> neither{.input_ids = &ids};
  EXPECT_NE(message(neither).find("neither \"targets\""), std::string::npos);
  targets(1, 2) = 50;  // vocab_size 50
  relpos::TrainingBatch<double> out_of_range{.input_ids = &ids, .targets = &targets};
  EXPECT_NE(message(out_of_range).find("targets[1, 2]"), std::string::npos)
      << message(out_of_range);
  targets.setConstant(relpos::kIgnoreTarget);
  EXPECT_NE(message(out_of_range).find("no target to learn from"), std::string::npos);
  Tensor3<double> wrong(2, 3, 8);
  relpos::TrainingBatch<double> mse{.input_ids = &ids, .target = &wrong};
  EXPECT_NE(message(mse).find("target: expected [2, 3, 16]"), std::string::npos) << message(mse);
}

// The parameters an optimizer changes are the model's after model(); the saved folder loads
// as the same model (F32).
TEST(Train, TrainableModelUpdatesRebuildsAndSaves) {
  auto tm = relpos::TrainableModel<double>::load(kTrainModels / "learned_ids_head_position_ids");
  const relpos::TokenIds ids = relpos::TokenIds::Constant(1, 4, 3);
  const auto before = tm.model().forward(ids).output;
  tm.for_each_parameter([](relpos::NamedTensor<double>& p) {
    // a constant added to every value row adds it to every z_i (a key row: softmax ignores it)
    if (p.name == "layers.1.self_attn.relative_value") p.values.array() += 0.25;
  });
  const auto after = tm.model().forward(ids).output;
  const Eigen::Tensor<double, 0, Eigen::RowMajor> change = (after - before).abs().maximum();
  EXPECT_GT(change(), 1e-6);  // the rebuilt model uses the changed table
  const fs::path dir =
      fs::temp_directory_path() / ("relpos_train_save_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  tm.save(dir);
  const auto saved = relpos::Model<double>::load(dir);
  const auto again = saved.forward(ids).output;
  const Eigen::Tensor<double, 0, Eigen::RowMajor> diff = (again - after).abs().maximum();
  EXPECT_LT(diff(), 1e-5);  // F32 weights
  EXPECT_EQ(
      relpos::test::read_text(dir / "config.json"),
      relpos::test::read_text(kTrainModels / "learned_ids_head_position_ids" / "config.json"));
  fs::remove_all(dir);
}

// model() after an update copies the parameters into the model in place (Model::assign_weights);
// the independent reference is a Model built afresh from the same parameters' safetensors
// image, as a loaded model is. Every parameter is changed, so every dense weight and every
// encoding's tensors (t5's shared table, xl's r_net and u/v with its cached r(c) rows,
// kerple's r1/r2, deberta's tables projected through in_proj, learned and additive tables)
// must reach the forward: the outputs agree to the bit, and differ from the model's before.
TEST(Train, TrainableModelUpdatesInPlaceAsAFreshlyBuiltModel) {
  const fs::path data = fs::path(RELPOS_TEST_DATA_DIR);
  for (const fs::path& dir :
       {kTrainModels / "learned_both", kTrainModels / "t5_bidirectional",
        kTrainModels / "kerple_log", kTrainModels / "xl", kTrainModels / "additive_learned",
        kTrainModels / "absolute", kTrainModels / "none_ids_head", kTrainModels / "rotary_yarn",
        kTrainModels / "alibi", kTrainModels / "sinusoidal_keys_values", data / "hf" / "deberta_v3",
        data / "block_options" / "bert_embed_rotary_gated_ids",
        data / "block_options" / "t5_block_t5"}) {
    SCOPED_TRACE(dir.string());
    auto tm = relpos::TrainableModel<double>::load(dir);
    const auto& config = tm.config();
    const auto forward = [&](const relpos::Model<double>& m) {
      if (config.vocab_size) {
        relpos::TokenIds ids(2, 5);
        for (Index k = 0; k < ids.size(); ++k) ids.data()[k] = (3 * k + 1) % *config.vocab_size;
        return m.forward(ids).output;
      }
      Tensor3<double> x(2, 5, config.d_model);
      for (Index k = 0; k < x.size(); ++k) x.data()[k] = std::sin(0.37 * double(k));
      return m.forward(x).output;
    };
    const Tensor3<double> before = forward(tm.model());
    const relpos::Model<double>* address = &tm.model();
    std::size_t n = 0;
    tm.for_each_parameter([&](relpos::NamedTensor<double>& p) {
      ++n;
      for (Index k = 0; k < p.values.size(); ++k)
        p.values(k) += 0.05 * std::sin(double(k) + 7.0 * double(n));
    });
    tm.clamp_to_domain();
    const Tensor3<double> after = forward(tm.model());
    EXPECT_EQ(&tm.model(), address) << "the same model, updated";
    const auto fresh = relpos::Model<double>(
        config, relpos::io::SafetensorsFile::from_bytes(tm.bytes<double>(), "<fresh>"));
    const Tensor3<double> want = forward(fresh);
    const Eigen::Tensor<double, 0, Eigen::RowMajor> diff = (after - want).abs().maximum();
    EXPECT_EQ(diff(), 0.0) << "in place vs a freshly built model";
    const Eigen::Tensor<double, 0, Eigen::RowMajor> change = (after - before).abs().maximum();
    EXPECT_GT(change(), 1e-4) << "the update reached the forward";
  }
}

// The largest |a − b|.
double max_abs_diff(const Tensor3<double>& a, const Tensor3<double>& b) {
  const Eigen::Tensor<double, 0, Eigen::RowMajor> d = (a - b).abs().maximum();
  return d();
}

// The first layer's cached rows of a learned (key table) or xl (r(c)) model: what an in-place
// update writes.
template <class F>
void with_first_table(const relpos::Model<double>& model, F&& f) {
  model.visit([&](const auto& encoder) {
    const auto& enc = encoder.layers.front().self_attn.encoding;
    using Enc = std::decay_t<decltype(enc)>;
    if constexpr (std::is_same_v<Enc, relpos::LearnedRelative<double>>) f(enc.key_table());
    if constexpr (std::is_same_v<Enc, relpos::XlRelative<double>>) f(enc.table());
  });
}

// Copy-on-write of the in-place update (Model::assign_weights): a copy of the model taken
// before an update, and rows a reader holds, keep their values, while the model takes the new
// tensors (as a freshly built model does); without either, the next update writes the tables
// where they are (the storage stays, no allocation).
TEST(Train, InPlaceUpdatesLeaveCopiesAndHeldRowsAlone) {
  for (const char* name :
       {"learned_both", "t5_bidirectional", "kerple_log", "xl", "additive_learned"}) {
    SCOPED_TRACE(name);
    auto tm = relpos::TrainableModel<double>::load(kTrainModels / name);
    ASSERT_FALSE(tm.config().vocab_size);
    Tensor3<double> x(1, 6, tm.config().d_model);
    for (Index k = 0; k < x.size(); ++k) x.data()[k] = std::cos(0.29 * double(k));
    const auto update = [&](double by) {
      tm.for_each_parameter([&](relpos::NamedTensor<double>& p) { p.values.array() += by; });
      tm.clamp_to_domain();
      return tm.model().forward(x).output;
    };
    const auto fresh = [&] {
      return relpos::Model<double>(tm.config(), relpos::io::SafetensorsFile::from_bytes(
                                                    tm.bytes<double>(), "<fresh>"))
          .forward(x)
          .output;
    };

    const relpos::Model<double> copy = tm.model();
    const Tensor3<double> before = copy.forward(x).output;
    std::shared_ptr<const relpos::Matrix<double>> held;  // a reader's rows
    with_first_table(tm.model(), [&](const auto& table) { held = table.snapshot(); });
    const relpos::Matrix<double> held_values = held ? *held : relpos::Matrix<double>();

    const Tensor3<double> after = update(0.03);
    EXPECT_GT(max_abs_diff(after, before), 1e-4) << "the update reached the model";
    EXPECT_EQ(max_abs_diff(after, fresh()), 0.0) << "the updated model vs a fresh one";
    EXPECT_EQ(max_abs_diff(copy.forward(x).output, before), 0.0) << "the copy kept its tables";
    if (held) {
      EXPECT_TRUE(*held == held_values) << "the reader's rows kept their values";
    }
    held.reset();

    // nobody else holds the tables now: written where they are
    const relpos::Matrix<double>* storage = nullptr;
    with_first_table(tm.model(), [&](const auto& table) { storage = table.snapshot().get(); });
    const Tensor3<double> again = update(-0.02);
    EXPECT_EQ(max_abs_diff(again, fresh()), 0.0) << "in place vs a fresh model";
    with_first_table(tm.model(), [&](const auto& table) {
      EXPECT_EQ(table.snapshot().get(), storage) << "the table was written in place";
    });
  }
}

// A parameter whose size an update changed, or one missing, is an Error naming it, raised
// before the model changes.
TEST(Train, AssignWeightsRefusesAWrongSizeOrAMissingTensorBeforeChangingAnything) {
  auto tm = relpos::TrainableModel<double>::load(kTrainModels / "learned_both");
  Tensor3<double> x(1, 4, tm.config().d_model);
  x.setConstant(0.5);
  const Tensor3<double> before = tm.model().forward(x).output;
  std::vector<relpos::NamedTensor<double>> tensors = tm.parameters();
  const auto message = [&](const std::vector<relpos::NamedTensor<double>>& t) {
    relpos::Model<double> m = tm.model();
    try {
      m.assign_weights(t);
    } catch (const relpos::Error& e) {
      const Eigen::Tensor<double, 0, Eigen::RowMajor> d =
          (m.forward(x).output - before).abs().maximum();
      EXPECT_EQ(d(), 0.0) << "the refused model is unchanged";
      return std::string(e.what());
    }
    return std::string("no error");
  };
  auto wrong = tensors;
  for (auto& t : wrong) {
    if (t.name == "layers.1.linear2.bias") t.values.resize(3);
  }
  EXPECT_EQ(message(wrong), "layers.1.linear2.bias: expected 16 values, got 3");
  auto missing = tensors;
  std::erase_if(missing, [](const auto& t) { return t.name == "layers.0.norm2.weight"; });
  EXPECT_EQ(message(missing), "layers.0.norm2.weight: missing (the model has this tensor)");
  auto table = tensors;
  for (auto& t : table) {
    if (t.name == "layers.1.self_attn.relative_key") t.shape = {3, 1};
  }
  EXPECT_NE(message(table).find("layers.1.self_attn.relative_key: expected ["), std::string::npos);
  // through TrainableModel: the size an optimizer's f changed
  tm.for_each_parameter([](relpos::NamedTensor<double>& p) {
    if (p.name == "head.bias" || p.name == "layers.0.linear1.bias") p.values.resize(1);
  });
  try {
    tm.model();
    ADD_FAILURE() << "no error";
  } catch (const relpos::Error& e) {
    EXPECT_NE(std::string(e.what()).find("linear1.bias: expected"), std::string::npos) << e.what();
  }
}

TEST(Train, KerpleParametersAreClampedIntoTheirDomain) {
  auto tm = relpos::TrainableModel<double>::load(kTrainModels / "kerple_power_causal");
  tm.for_each_parameter([](relpos::NamedTensor<double>& p) {
    if (p.name == "position.kerple_r1") p.values.setConstant(-1);
    if (p.name == "position.kerple_r2") p.values.setConstant(3);
  });
  tm.clamp_to_domain();
  for (const auto& p : tm.parameters()) {
    if (p.name == "position.kerple_r1") {
      EXPECT_TRUE((p.values.array() == 0.01).all());
    }
    if (p.name == "position.kerple_r2") {
      EXPECT_TRUE((p.values.array() == 2.0).all());
    }
  }
  EXPECT_NO_THROW(tm.model());  // loadable again
}

// Without the clamp, a value outside the domain is refused by the in-place update as by the
// loader, naming the tensor and the head, before anything changes.
TEST(Train, KerpleUpdateOutsideTheDomainIsRefusedBeforeChangingAnything) {
  const fs::path dir = kTrainModels / "kerple_power_causal";
  const auto tm = relpos::TrainableModel<double>::load(dir);
  auto model = relpos::Model<double>::load(dir);  // its own tables: updated in place
  Tensor3<double> x(1, 5, tm.config().d_model);
  x.setConstant(0.25);
  const Tensor3<double> before = model.forward(x).output;
  for (const auto& [tensor, value, message] :
       {std::tuple{"position.kerple_r2", 2.5,
                   "position.kerple_r2[0]: must be <= 2 in the power "
                   "form, got 2.5"},
        std::tuple{"position.kerple_r1", -0.25,
                   "position.kerple_r1[0]: must be a finite number > 0, got -0.25"}}) {
    auto bad = tm.parameters();
    for (auto& p : bad) {
      if (p.name == tensor) p.values(0) = value;
    }
    try {
      model.assign_weights(bad);
      ADD_FAILURE() << "no error";
    } catch (const relpos::Error& e) {
      EXPECT_EQ(std::string(e.what()), message);
    }
    const Eigen::Tensor<double, 0, Eigen::RowMajor> d =
        (model.forward(x).output - before).abs().maximum();
    EXPECT_EQ(d(), 0.0) << "the refused model is unchanged";
  }
  model.assign_weights(tm.parameters());  // the same values are taken
  EXPECT_EQ(max_abs_diff(model.forward(x).output, before), 0.0);
}

// tools/golden_train.py's FIT_CASES: torch.optim.AdamW with clip_grad_norm_ in float64, step t
// on rows (t·B + i) mod rows. In double the key rows of in_proj_bias, whose exact gradient is 0
// (spec §6's pitfall), stay below Adam's eps, so every parameter follows torch.
struct TrainFitCase {
  std::string name;
  relpos::FitOptions options;
};

TrainFitCase train_fit_case(const std::string& name) {
  const auto want =
      relpos::io::SafetensorsFile::open((kTrainData / name / "expected.safetensors").string());
  const auto& m = want.metadata();
  TrainFitCase c{name, {}};
  c.options.steps = std::stol(m.at("steps"));
  c.options.batch = std::stol(m.at("batch"));
  c.options.adamw.lr = std::stod(m.at("lr"));
  c.options.adamw.weight_decay = std::stod(m.at("weight_decay"));
  if (!m.at("clip_norm").empty()) c.options.clip_norm = std::stod(m.at("clip_norm"));
  return c;
}

const char* const kTrainFitCases[] = {"fit_learned_head", "fit_rotary_mse"};

TEST(TrainFit, AdamWStepsMatchTorchInDouble) {
  for (const std::string name : kTrainFitCases) {
    SCOPED_TRACE(name);
    const TrainFitCase c = train_fit_case(name);
    auto model = relpos::TrainableModel<double>::load(train_model_of(name));
    const auto in =
        relpos::io::SafetensorsFile::open((kTrainData / name / "input.safetensors").string());
    const auto want =
        relpos::io::SafetensorsFile::open((kTrainData / name / "expected.safetensors").string());
    const auto data = relpos::read_training_data<double>(in, model.config());
    std::vector<double> losses;
    relpos::fit(model, data, c.options, [&](Index t, double loss) {
      EXPECT_EQ(t, static_cast<Index>(losses.size()));
      losses.push_back(loss);
    });
    ASSERT_EQ(static_cast<Index>(losses.size()), c.options.steps);
    for (std::size_t t = 0; t < losses.size(); ++t) {
      const double w = want.values<double>("loss." + std::to_string(t)).at(0);
      EXPECT_NEAR(losses[t], w, 1e-9 * (1 + std::abs(w))) << "step " << t;
    }
    for (const relpos::NamedTensor<double>& p : model.parameters()) {
      SCOPED_TRACE(p.name);
      EXPECT_TRUE(relpos::test::all_close(p.values, train_expected(want, p.name), 1e-9, 1e-9));
    }
  }
}

TEST(TrainFit, BadOptionsAreErrorsBeforeAnyStep) {
  auto model = relpos::TrainableModel<double>::load(kTrainModels / "none_ids_head");
  relpos::TrainingData<double> data;
  data.inputs.input_ids = relpos::TokenIds::Zero(3, 4);
  data.targets = relpos::TokenIds::Zero(3, 4);
  const auto message = [&](relpos::FitOptions o) {
    try {
      relpos::fit(model, data, o, [](Index, double) { ADD_FAILURE() << "a step ran"; });
    } catch (const relpos::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({.steps = 0}).find("steps: expected >= 1"), std::string::npos);
  EXPECT_NE(message({.batch = 0}).find("batch: expected >= 1"), std::string::npos);
  EXPECT_NE(message({.batch = 4}).find("larger than the 3 rows"), std::string::npos);
  EXPECT_NE(message({.clip_norm = 0.0}).find("clip_norm"), std::string::npos);
  relpos::FitOptions bad_lr;
  bad_lr.adamw.lr = -1;
  EXPECT_NE(message(bad_lr), "no error");
}

#ifdef RELPOS_TRAIN_EXE
struct TrainRun {
  int status = -1;
  std::string out, err;
};

// relpos-train with `args` in folder `cwd`, stdout and stderr captured.
TrainRun run_train(const std::vector<std::string>& args, const fs::path& cwd) {
  const fs::path out = cwd / ".stdout", err = cwd / ".stderr";
  std::vector<std::string> argv_s = {RELPOS_TRAIN_EXE};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addchdir_np(&actions, cwd.c_str());
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid = 0;
  TrainRun r;
  if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ) == 0) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  posix_spawn_file_actions_destroy(&actions);
  r.out = relpos::test::read_text(out);
  r.err = relpos::test::read_text(err);
  fs::remove(out);
  fs::remove(err);
  return r;
}

class TrainCli : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           ("relpos_train_cli_" + std::string(info->name()) + "_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  // Only what the test put there (nothing left behind by a failed run).
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(dir_)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
  fs::path dir_;
};

TEST_F(TrainCli, GradWritesTheLossAndEveryGradient) {
  for (const std::string name : kTrainCases) {
    SCOPED_TRACE(name);
    const fs::path output = dir_ / (name + ".safetensors");
    const TrainRun r =
        run_train({"grad", "--model", train_model_of(name).string(), "--input",
                   (kTrainData / name / "input.safetensors").string(), "--output", output.string()},
                  dir_);
    ASSERT_EQ(r.status, 0) << r.err;
    const auto got = relpos::io::SafetensorsFile::open(output.string());
    const auto want =
        relpos::io::SafetensorsFile::open((kTrainData / name / "expected.safetensors").string());
    std::vector<std::string> got_names = got.names(), want_names = want.names();
    std::sort(got_names.begin(), got_names.end());
    std::sort(want_names.begin(), want_names.end());
    EXPECT_EQ(got_names, want_names);  // loss, grad.NAME for every tensor, grad.input with input
    for (const std::string& n : want_names) {
      SCOPED_TRACE(n);
      EXPECT_EQ(got.info(n).dtype, relpos::io::DType::F32);
      EXPECT_EQ(got.info(n).shape, want.info(n).shape);
      const std::vector<float> g = got.values<float>(n);
      const Vector<float> gv =
          Eigen::Map<const Vector<float>>(g.data(), static_cast<Index>(g.size()));
      EXPECT_TRUE(train_close<float>(gv, train_expected(want, n)));
    }
  }
}

// A training file for none_ids_head (vocab 50, d_model 16) with the given extra tensors.
void write_train_input(const fs::path& path, const std::vector<std::int64_t>& targets,
                       bool with_target, std::vector<std::int64_t> target_shape = {2, 3, 16}) {
  relpos::io::SafetensorsWriter w;
  w.add("input_ids", std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}, {2, 3});
  if (!targets.empty()) w.add("targets", targets, {2, 3});
  if (with_target) {
    std::int64_t n = 1;
    for (auto s : target_shape) n *= s;
    w.add("target", std::vector<float>(static_cast<std::size_t>(n), 0.5f), target_shape);
  }
  w.write(path.string());
}

TEST_F(TrainCli, BadTrainingFilesAreOneLineErrorsAndLeaveNothing) {
  const std::string model = (kTrainModels / "none_ids_head").string();
  struct Case {
    const char* what;
    std::vector<std::int64_t> targets;
    bool target;
    std::vector<std::int64_t> target_shape;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {"both", {1, 2, 3, 4, 5, 6}, true, {2, 3, 16}, "both \"targets\" and \"target\""},
      {"neither", {}, false, {}, "neither \"targets\""},
      {"target shape", {}, true, {2, 3, 8}, "got [2, 3, 8]"},
      {"out of range", {1, 2, 3, 4, 50, 6}, false, {}, "target 50 at [1, 1] is out of range"},
      {"negative", {1, -7, 3, 4, 5, 6}, false, {}, "target -7 at [0, 1]"},
      {"no counted", {-100, -100, -100, -100, -100, -100}, false, {}, "no target to learn from"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    const fs::path input = dir_ / "in.safetensors";
    write_train_input(input, c.targets, c.target, c.target_shape);
    const TrainRun r = run_train(
        {"grad", "--model", model, "--input", input.string(), "--output", "out.safetensors"}, dir_);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(files(), std::vector<std::string>{"in.safetensors"});  // no output, no temporary
  }
  // a target of the wrong dtype (I64 instead of F32), and targets of the wrong dtype (F32)
  {
    relpos::io::SafetensorsWriter w;
    w.add("input_ids", std::vector<std::int64_t>{1, 2, 3, 4, 5, 6}, {2, 3});
    w.add("targets", std::vector<float>(6, 1.0f), {2, 3});
    w.write((dir_ / "in.safetensors").string());
    const TrainRun r = run_train(
        {"grad", "--model", model, "--input", "in.safetensors", "--output", "out.safetensors"},
        dir_);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("targets"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("F32"), std::string::npos) << r.err;
  }
  {
    relpos::io::SafetensorsWriter w;
    w.add("input", std::vector<float>(2 * 3 * 16, 0.25f), {2, 3, 16});
    w.add("target", std::vector<std::int64_t>(2 * 3 * 16, 1), {2, 3, 16});
    w.write((dir_ / "in.safetensors").string());
    const TrainRun r = run_train(
        {"grad", "--model", model, "--input", "in.safetensors", "--output", "out.safetensors"},
        dir_);
    EXPECT_EQ(r.status, 1);
    EXPECT_NE(r.err.find("target"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("I64"), std::string::npos) << r.err;
  }
  EXPECT_EQ(files(), std::vector<std::string>{"in.safetensors"});
  // command-line mistakes
  EXPECT_EQ(run_train({"grad", "--model", model}, dir_).status, 2);
  EXPECT_EQ(run_train({"train"}, dir_).status, 2);
  EXPECT_EQ(files(), std::vector<std::string>{"in.safetensors"});
}

// relpos-train fit in float: each step's loss on stdout, near torch's float64 run; the folder it
// writes holds what the library's fit gives (the same code, threads 2 against the default: the
// same bits) and loads.
TEST_F(TrainCli, FitPrintsEachLossAndWritesTheTrainedFolder) {
  const std::string name = "fit_learned_head";
  const TrainFitCase c = train_fit_case(name);
  const std::string input = (kTrainData / name / "input.safetensors").string();
  const TrainRun r = run_train(
      {"fit", "--model", train_model_of(name).string(), "--input", input, "--output", "trained",
       "--steps", std::to_string(c.options.steps), "--batch", std::to_string(c.options.batch),
       "--lr", "0.01", "--weight-decay", "0.01", "--clip-norm", "0.5", "--threads", "2"},
      dir_);
  ASSERT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.err, "");  // not a terminal: no progress line
  const auto want =
      relpos::io::SafetensorsFile::open((kTrainData / name / "expected.safetensors").string());
  std::istringstream lines(r.out);
  for (Index t = 0; t < c.options.steps; ++t) {
    std::string step, counter, word;
    double loss = 0;
    lines >> step >> counter >> word >> loss;
    EXPECT_EQ(step, "step");
    EXPECT_EQ(counter, std::to_string(t + 1) + "/" + std::to_string(c.options.steps));
    const double w = want.values<double>("loss." + std::to_string(t)).at(0);
    // float: the loss rounds at 1e-7; the parameters Adam moves by lr·m/(√v + eps) differ by
    // more where |g| is near float's rounding (the in_proj key bias, which no loss sees)
    EXPECT_NEAR(loss, w, 1e-4 * (1 + std::abs(w))) << "step " << t;
  }
  auto library = relpos::TrainableModel<float>::load(train_model_of(name));
  const auto data =
      relpos::read_training_data<float>(relpos::io::SafetensorsFile::open(input), library.config());
  relpos::fit(library, data, c.options, [](Index, float) {});
  const auto trained =
      relpos::io::SafetensorsFile::open((dir_ / "trained" / "model.safetensors").string());
  for (const relpos::NamedTensor<float>& p : library.parameters()) {
    const std::vector<float> v = trained.values<float>(p.name);
    EXPECT_TRUE(Eigen::Map<const Vector<float>>(v.data(), static_cast<Index>(v.size())) == p.values)
        << p.name;
  }
  EXPECT_NO_THROW(relpos::Model<float>::load(dir_ / "trained"));
}

TEST_F(TrainCli, FitBadOptionsAreOneLineErrorsAndLeaveNothing) {
  const std::string name = "fit_learned_head";  // 5 rows
  const std::vector<std::string> base = {"fit",
                                         "--model",
                                         train_model_of(name).string(),
                                         "--input",
                                         (kTrainData / name / "input.safetensors").string(),
                                         "--output",
                                         "trained"};
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--steps", "0", "--batch", "2", "--lr", "0.01"}, "--steps: expected >= 1"},
      {{"--steps", "2", "--batch", "0", "--lr", "0.01"}, "--batch: expected >= 1"},
      {{"--steps", "2", "--batch", "2", "--lr", "0"}, "--lr: expected > 0"},
      {{"--steps", "2", "--batch", "2", "--lr", "-1"}, "--lr: expected > 0"},
      {{"--steps", "2", "--batch", "2", "--lr", "nan"}, "--lr: expected a finite number"},
      {{"--steps", "2", "--batch", "2", "--lr", "inf"}, "--lr: expected a finite number"},
      {{"--steps", "2", "--batch", "6", "--lr", "0.01"}, "--batch 6 is larger than the 5 rows"},
      {{"--steps", "2", "--lr", "0.01"}, "--batch is required"},
      {{"--steps", "x", "--batch", "2", "--lr", "0.01"}, "--steps: expected an integer"},
  };
  for (const auto& [extra, expect] : cases) {
    SCOPED_TRACE(expect);
    std::vector<std::string> args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    const TrainRun r = run_train(args, dir_);
    EXPECT_NE(r.status, 0);
    EXPECT_NE(r.err.find(expect), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    EXPECT_EQ(r.out, "");
    EXPECT_TRUE(files().empty());  // no folder, no temporary
  }
}
#endif  // RELPOS_TRAIN_EXE

}  // namespace
