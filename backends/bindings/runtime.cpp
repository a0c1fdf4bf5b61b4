// nanobind glue for the compiled-model runtime: binarize.backends._fbck.Model (an artifact loaded by the
// same C++ loader as the C API and the CLI, runtime/model.h), its per-option Program and Stream.
// Python (backends/artifact.py) checks the artifact first; the C++ loader checks it again and raises
// binarize.ArtifactError (a ValueError), never crashes.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <chrono>
#include <cstring>
#include <stdexcept>

#include "../runtime/model.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using F32 = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using OutF32 = nb::ndarray<nb::numpy, float>;

OutF32 new_array(const std::vector<size_t>& shape, float** data) {
  size_t n = 1;
  for (size_t d : shape) n *= d;
  float* buf = new float[n > 0 ? n : 1];
  nb::capsule owner(buf, [](void* p) noexcept { delete[] static_cast<float*>(p); });
  *data = buf;
  return OutF32(buf, shape.size(), shape.data(), owner);
}

void check_shape(const F32& x, const std::vector<size_t>& want, size_t skip_axis, const char* what) {
  if (x.ndim() != want.size() + 1)
    throw nb::value_error((std::string(what) + ": expected rank " + std::to_string(want.size() + 1) +
                           ", got " + std::to_string(x.ndim()))
                              .c_str());
  for (size_t i = 0; i < want.size(); ++i)
    if (i + 1 != skip_axis && x.shape(i + 1) != want[i])
      throw nb::value_error((std::string(what) + ": size " + std::to_string(x.shape(i + 1)) +
                             " on axis " + std::to_string(i + 1) + ", expected " +
                             std::to_string(want[i]))
                                .c_str());
}

}  // namespace

void bind_runtime(nb::module_& m) {
  using fbck::rt::Model;
  using fbck::rt::Program;
  using fbck::rt::Stream;
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const fbck::rt::ArtifactError& e) {
      nb::object cls = nb::module_::import_("binarize.errors").attr("ArtifactError");
      PyErr_SetString(cls.ptr(), e.what());
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  nb::class_<Model>(m, "Model", "An artifact loaded by the C++ runtime: one Program per depth option.")
      .def_static(
          "from_bytes",
          [](nb::bytes data, const std::string& impl, const std::vector<std::string>& rules) {
            unsigned mask = 0;
            for (const std::string& r : rules) {
              bool known = false;
              for (const auto& [name, bit] : fbck::rt::rule_names())
                if (name == r) mask |= bit, known = true;
              if (!known) throw std::invalid_argument("unknown fusion rule '" + r + "'");
            }
            const auto* p = static_cast<const uint8_t*>(static_cast<const void*>(data.c_str()));
            return Model::from_bytes(p, data.size(), impl, mask);
          },
          "data"_a, "impl"_a = "auto", "rules"_a = std::vector<std::string>{"fold_thresholds", "emit_planes", "fuse_chains", "fuse_epilogues"},
          "Load an artifact's bytes (checked as the C API does), applying the named fusion rules.")
      .def_static(
          "fusion_rules",
          []() {
            std::vector<std::string> out;
            for (const auto& [name, bit] : fbck::rt::rule_names()) out.push_back(name);
            return out;
          },
          "The fusion rules the runtime applies (all by default).")
      .def_prop_ro("options", &Model::options, "Depth options in file order.")
      .def_prop_ro("metadata", &Model::metadata)
      .def("program", &Model::program, "thin"_a, nb::rv_policy::reference_internal);

  nb::class_<Program>(m, "Program", "One depth option's program, ready to run.")
      .def(
          "run",
          [](const Program& p, const F32& x) {
            check_shape(x, p.input_shape(), 0, "input");
            const size_t B = x.shape(0);
            std::vector<size_t> shape{B};
            shape.insert(shape.end(), p.output_shape().begin(), p.output_shape().end());
            float* y = nullptr;
            OutF32 out = new_array(shape, &y);
            bool finite = true;
            {
              nb::gil_scoped_release release;
              finite = fbck::rt::all_finite(x.data(), x.size());
              if (finite) p.run(x.data(), B, y);
            }
            if (!finite) throw nb::value_error("input contains NaN or infinite values");
            return out;
          },
          "x"_a, "Run whole utterances: x (B, *input_shape) float32 -> (B, *output_shape).")
      .def(
          "profile",
          [](const Program& p, const F32& x, int reps) {
            check_shape(x, p.input_shape(), 0, "input");
            std::vector<size_t> shape{x.shape(0)};
            shape.insert(shape.end(), p.output_shape().begin(), p.output_shape().end());
            std::vector<float> y(x.size() ? 1 : 1);
            size_t n = 1;
            for (size_t d : shape) n *= d;
            y.resize(n);
            std::vector<double> ns(p.num_ops(), 0.0);
            {
              nb::gil_scoped_release release;
              for (int r = 0; r < reps; ++r) p.run(x.data(), x.shape(0), y.data(), ns.data());
            }
            nb::list out;
            for (size_t i = 0; i < ns.size(); ++i)
              out.append(nb::make_tuple(p.op_name(i), p.op_kind(i), ns[i] / std::max(reps, 1)));
            return out;
          },
          "x"_a, "reps"_a = 100, "Mean wall time per op (ns) over reps runs: [(name, kind, ns)].")
      .def(
          "time_stream",
          [](const Program& p, const F32& x, int reps) {
            // x's frames, each contiguous, cut before the clock starts (as a device's audio front
            // end hands them over one at a time)
            check_shape(x, p.input_shape(), 0, "input");
            const int t = p.input_time_axis();
            if (x.shape(0) != 1 || t < 1) throw nb::value_error("time_stream takes one utterance with a time axis");
            const size_t T = x.shape(t);
            size_t outer = 1, inner = 1;  // the dims before and after the time axis
            for (int d = 0; d < t; ++d) outer *= x.shape(d);
            for (size_t d = t + 1; d < x.ndim(); ++d) inner *= x.shape(d);
            std::vector<std::vector<float>> frames(T, std::vector<float>(outer * inner));
            for (size_t f = 0; f < T; ++f)
              for (size_t o = 0; o < outer; ++o)
                std::memcpy(frames[f].data() + o * inner, x.data() + (o * T + f) * inner, inner * sizeof(float));
            size_t n_out = 1;
            for (size_t d : p.output_shape()) n_out *= d;
            std::vector<float> y(n_out);
            std::vector<double> whole, streamed;
            {
              nb::gil_scoped_release release;
              using clock = std::chrono::steady_clock;
              auto ns = [](clock::time_point a, clock::time_point b) {
                return std::chrono::duration<double, std::nano>(b - a).count();
              };
              for (int r = 0; r < reps; ++r) {
                const auto a = clock::now();
                p.run(x.data(), 1, y.data());
                whole.push_back(ns(a, clock::now()));
              }
              // one stream, reset per utterance (as the C API and an always-on spotter run it:
              // its buffers are allocated once)
              auto s = p.stream();
              for (int r = 0; r < reps; ++r) {
                const auto a = clock::now();
                s->reset();
                for (size_t f = 0; f < T; ++f) s->push(frames[f].data(), 1);
                s->finish();
                streamed.push_back(ns(a, clock::now()));
              }
            }
            return nb::make_tuple(whole, streamed);
          },
          "x"_a, "reps"_a = 100,
          "Benchmark helper: wall times (ns) of reps whole-utterance runs and of reps streams pushing "
          "one frame at a time (one stream, reset per utterance, then finish), all in C++: (whole, "
          "streamed).")
      .def_prop_ro("input_shape", &Program::input_shape)
      .def_prop_ro("output_shape", &Program::output_shape)
      .def_prop_ro("impl", &Program::impl)
      .def_prop_ro("num_ops", &Program::num_ops)
      .def_prop_ro("input_time_axis", &Program::input_time_axis)
      .def_prop_ro("output_time_axis", &Program::output_time_axis)
      .def_prop_ro("streamed_ops", &Program::streamed_ops)
      .def("stream", &Program::stream, nb::keep_alive<0, 1>(), "A frame-by-frame stream (batch 1).");

  nb::class_<Stream>(m, "Stream", "Frame-by-frame execution of a Program for one utterance.")
      .def(
          "push",
          [](Stream& s, const F32& frames) {
            const Program& p = s.program();
            const int t = p.input_time_axis();
            check_shape(frames, p.input_shape(), t, "frames");
            if (frames.shape(0) != 1) throw nb::value_error("a stream takes one utterance (batch 1)");
            nb::gil_scoped_release release;
            return s.push(frames.data(), frames.shape(t));
          },
          "frames"_a, "Append frames (1, ..., n, ...) on the input's time axis; returns new output frames.")
      .def("finish", &Stream::finish, "End the utterance and compute everything that is left.")
      .def(
          "output",
          [](const Stream& s) {
            const Program& p = s.program();
            std::vector<size_t> shape{1};
            shape.insert(shape.end(), p.output_shape().begin(), p.output_shape().end());
            float* y = nullptr;
            OutF32 out = new_array(shape, &y);
            const auto& buf = s.output_buffer();
            std::memcpy(y, buf.data(), sizeof(float) * buf.size());
            return out;
          },
          "The output buffer (frames beyond output_frames are zero).")
      .def_prop_ro("frames_in", &Stream::frames_in)
      .def_prop_ro("output_frames", &Stream::output_frames)
      .def_prop_ro("finished", &Stream::finished);
}
