// nanobind glue for the compiled-model runtime (backends/runtime/program.h): binarize.backends._fbck.Program
// and binarize.backends._fbck.Stream. Python (backends/compiled.py) validates the program first; the C++
// side checks again and turns every problem into ValueError, never a crash.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/unique_ptr.h>
#include <nanobind/stl/vector.h>

#include <cstring>
#include <stdexcept>

#include "../runtime/program.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace {

using F32 = nb::ndarray<const float, nb::c_contig, nb::device::cpu>;
using U64 = nb::ndarray<const uint64_t, nb::c_contig, nb::device::cpu>;
using I8 = nb::ndarray<const int8_t, nb::c_contig, nb::device::cpu>;
using OutF32 = nb::ndarray<nb::numpy, float>;

template <class T>
std::vector<T> flat(const nb::ndarray<const T, nb::c_contig, nb::device::cpu>& a) {
  return std::vector<T>(a.data(), a.data() + a.size());
}

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
  using fbck::rt::Program;
  using fbck::rt::Stream;
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });

  nb::class_<Program>(m, "Program", "A lowered model ready to run (built by backends.compiled).")
      .def(nb::init<const std::string&>(), "impl"_a = "auto")
      .def("add_value", &Program::add_value, "shape"_a)
      .def("set_alias", &Program::set_alias, "value"_a, "base"_a)
      .def(
          "add_op",
          [](Program& p, const std::string& kind, const std::string& name, const std::vector<int>& inputs,
             int output, const std::map<std::string, int64_t>& ints,
             const std::map<std::string, double>& floats, const std::map<std::string, std::string>& strs,
             const std::map<std::string, std::vector<int64_t>>& lists, const std::map<std::string, F32>& f32,
             const std::map<std::string, U64>& u64, const std::map<std::string, I8>& i8) {
            fbck::rt::OpSpec s;
            s.kind = kind, s.name = name, s.inputs = inputs, s.output = output;
            s.ints = ints, s.floats = floats, s.strs = strs, s.lists = lists;
            for (const auto& [k, v] : f32) s.f32[k] = flat(v);
            for (const auto& [k, v] : u64) s.u64[k] = flat(v);
            for (const auto& [k, v] : i8) s.i8[k] = flat(v);
            p.add_op(s);
          },
          "kind"_a, "name"_a, "inputs"_a, "output"_a, "ints"_a, "floats"_a, "strs"_a, "lists"_a,
          "f32"_a, "u64"_a, "i8"_a)
      .def("finalize", &Program::finalize, "input"_a, "output"_a, "time_axis"_a)
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
