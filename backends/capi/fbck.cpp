// The C API (fbck.h) over the C++ runtime (runtime/model.h). No exception crosses it.
#include "fbck.h"

#include <exception>
#include <memory>
#include <new>
#include <string>

#include "../runtime/model.h"

struct fbck_model {
  std::unique_ptr<fbck::rt::Model> model;
};

struct fbck_stream {
  const fbck::rt::Program* program = nullptr;
  std::unique_ptr<fbck::rt::Stream> stream;
};

namespace {

thread_local std::string g_error;

template <class F>
auto guarded(F&& f, decltype(f()) on_error) noexcept -> decltype(f()) {
  try {
    g_error.clear();
    return f();
  } catch (const std::bad_alloc&) {
    g_error = "out of memory";
  } catch (const std::exception& e) {
    g_error = e.what();
  } catch (...) {
    g_error = "unknown error";
  }
  return on_error;
}

size_t prod(const std::vector<size_t>& d) {
  size_t n = 1;
  for (size_t v : d) n *= v;
  return n;
}

const fbck::rt::Program& first(const fbck_model* m) { return m->model->program(m->model->options().front()); }

void need(const void* p, const char* what) {
  if (!p) throw std::invalid_argument(std::string(what) + " is NULL");
}

}  // namespace

extern "C" {

fbck_model* fbck_load(const char* path) {
  return guarded(
      [&]() -> fbck_model* {
        need(path, "path");
        return new fbck_model{fbck::rt::Model::from_file(path)};
      },
      nullptr);
}

fbck_model* fbck_load_buffer(const void* data, size_t size) {
  return guarded(
      [&]() -> fbck_model* {
        need(data, "data");
        return new fbck_model{fbck::rt::Model::from_bytes(static_cast<const uint8_t*>(data), size)};
      },
      nullptr);
}

void fbck_free(fbck_model* model) { delete model; }

size_t fbck_input_size(const fbck_model* m) { return m ? prod(first(m).input_shape()) : 0; }
size_t fbck_output_size(const fbck_model* m) { return m ? prod(first(m).output_shape()) : 0; }
size_t fbck_frames(const fbck_model* m) {
  return m && first(m).input_time_axis() >= 1 ? first(m).input_frames() : 0;
}
size_t fbck_input_dims(const fbck_model* m, size_t* dims, size_t max) {
  if (!m) return 0;
  const auto& shape = first(m).input_shape();
  for (size_t i = 0; dims && i < shape.size() && i < max; ++i) dims[i] = shape[i];
  return shape.size();
}
int fbck_time_axis(const fbck_model* m) { return m ? first(m).input_time_axis() - 1 : -1; }
int fbck_num_options(const fbck_model* m) { return m ? static_cast<int>(m->model->options().size()) : 0; }
int fbck_option(const fbck_model* m, int i) {
  return m && i >= 0 && i < fbck_num_options(m) ? m->model->options()[i] : -1;
}
const char* fbck_impl(const fbck_model* m) { return m ? first(m).kernels_name() : ""; }

int fbck_run(const fbck_model* m, const float* features, size_t n_frames, int thin, float* logits) {
  return guarded(
      [&]() -> int {
        need(m, "model");
        need(features, "features");
        need(logits, "logits");
        const fbck::rt::Program& p = m->model->program(thin);
        if (p.input_time_axis() >= 1 && n_frames != p.input_frames())
          throw std::invalid_argument("the model takes " + std::to_string(p.input_frames()) +
                                      " frames per utterance, got " + std::to_string(n_frames));
        if (!fbck::rt::all_finite(features, prod(p.input_shape())))
          throw std::invalid_argument("the features contain NaN or infinite values");
        p.run(features, 1, logits);
        return 0;
      },
      -1);
}

fbck_stream* fbck_stream_new(const fbck_model* m, int thin) {
  return guarded(
      [&]() -> fbck_stream* {
        need(m, "model");
        const fbck::rt::Program& p = m->model->program(thin);
        return new fbck_stream{&p, p.stream()};
      },
      nullptr);
}

int fbck_stream_push(fbck_stream* s, const float* frames, size_t n_frames) {
  return guarded(
      [&]() -> int {
        need(s, "stream");
        need(frames, "frames");
        const size_t per_frame = prod(s->program->input_shape()) / s->program->input_frames();
        if (!fbck::rt::all_finite(frames, per_frame * n_frames))
          throw std::invalid_argument("the frames contain NaN or infinite values");
        s->stream->push(frames, n_frames);
        return 0;
      },
      -1);
}

int fbck_stream_finish(fbck_stream* s, float* logits) {
  return guarded(
      [&]() -> int {
        need(s, "stream");
        need(logits, "logits");
        s->stream->finish();
        const auto& out = s->stream->output_buffer();
        std::copy(out.begin(), out.end(), logits);
        return 0;
      },
      -1);
}

int fbck_stream_reset(fbck_stream* s) {
  return guarded(
      [&]() -> int {
        need(s, "stream");
        s->stream->reset();
        return 0;
      },
      -1);
}

void fbck_stream_free(fbck_stream* s) { delete s; }

const char* fbck_last_error(void) { return g_error.c_str(); }

}  // extern "C"
