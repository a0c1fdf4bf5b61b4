// fbck_run: run a binarize artifact on features from a file, with no Python (the C API only).
//
//   fbck_run model.bnn features.bin [--thin K] [--stream N] [--quiet]
//   fbck_run --info model.bnn
//   fbck_run --check a.bnn [b.bnn ...]
//
// features.bin holds float32 values (little-endian, no header), utterance after utterance, each
// laid out as the model's input (e.g. 1 x mels x frames: numpy's x.astype("<f4").tofile(path)).
// Prints one line of logits per utterance (%.9g: float32 values round-trip exactly). --stream N
// pushes N frames at a time through the streaming API instead of one call per utterance;
// --quiet prints nothing per utterance (for instruction counts). --check loads each file, runs
// zeros through every option and prints "ok" or the error, one line per file. The kernels are the best for this CPU, or
// $FBCK_IMPL (ref, avx2, avx512, neon).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../capi/fbck.h"

namespace {

int usage() {
  std::fprintf(stderr,
               "usage: fbck_run model.bnn features.bin [--thin K] [--stream N] [--quiet]\n"
               "       fbck_run --info model.bnn\n"
               "       fbck_run --check a.bnn [b.bnn ...]\n");
  return 2;
}

bool parse_int(const char* s, long lo, long hi, long* out) {
  char* end = nullptr;
  const long v = std::strtol(s, &end, 10);
  if (!*s || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

int check(int argc, char** argv) {
  int bad = 0;
  for (int i = 2; i < argc; ++i) {
    fbck_model* m = fbck_load(argv[i]);
    // a loaded model also runs: zeros at every option
    std::vector<float> x(m ? fbck_input_size(m) : 0), y(m ? fbck_output_size(m) : 0);
    int status = m ? 0 : -1;
    for (int k = 0; m && k < fbck_num_options(m) && status == 0; ++k)
      status = fbck_run(m, x.data(), fbck_frames(m), fbck_option(m, k), y.data());
    if (status == 0) {
      std::printf("ok\n");
    } else {
      std::string msg = fbck_last_error();  // one line per file, whatever the file's names hold
      for (char& c : msg)
        if (static_cast<unsigned char>(c) < 0x20) c = '?';
      std::printf("error: %s\n", msg.c_str());
      ++bad;
    }
    fbck_free(m);
  }
  return bad ? 1 : 0;
}

int info(const char* path) {
  fbck_model* m = fbck_load(path);
  if (!m) {
    std::fprintf(stderr, "fbck_run: %s\n", fbck_last_error());
    return 1;
  }
  std::printf("kernels %s\ninput %zu floats, %zu frames\noutput %zu logits\noptions", fbck_impl(m),
              fbck_input_size(m), fbck_frames(m), fbck_output_size(m));
  for (int i = 0; i < fbck_num_options(m); ++i) std::printf(" %d", fbck_option(m, i));
  std::printf("\n");
  fbck_free(m);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && !std::strcmp(argv[1], "--check")) return check(argc, argv);
  if (argc == 3 && !std::strcmp(argv[1], "--info")) return info(argv[2]);
  if (argc < 3) return usage();
  long thin = -1, stream = 0;
  bool quiet = false;
  for (int i = 3; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--thin") && i + 1 < argc) {
      if (!parse_int(argv[++i], 0, 1 << 20, &thin)) return usage();
    } else if (!std::strcmp(argv[i], "--stream") && i + 1 < argc) {
      if (!parse_int(argv[++i], 1, 1 << 20, &stream)) return usage();
    } else if (!std::strcmp(argv[i], "--quiet")) {
      quiet = true;
    } else {
      return usage();
    }
  }
  fbck_model* m = fbck_load(argv[1]);
  if (!m) {
    std::fprintf(stderr, "fbck_run: %s\n", fbck_last_error());
    return 1;
  }
  if (thin < 0) thin = fbck_option(m, 0);
  std::FILE* f = std::fopen(argv[2], "rb");
  if (!f) {
    std::fprintf(stderr, "fbck_run: cannot open %s\n", argv[2]);
    fbck_free(m);
    return 1;
  }
  std::vector<float> x;
  float buf[4096];
  size_t got;
  while ((got = std::fread(buf, sizeof(float), 4096, f)) > 0) x.insert(x.end(), buf, buf + got);
  std::fclose(f);
  const size_t in = fbck_input_size(m), out = fbck_output_size(m), frames = fbck_frames(m);
  if (x.empty() || x.size() % in) {
    std::fprintf(stderr, "fbck_run: %s holds %zu floats, not a whole number of utterances of %zu\n", argv[2],
                 x.size(), in);
    fbck_free(m);
    return 1;
  }
  std::vector<float> logits(out), chunk;
  int status = 0;
  // one stream for every utterance, reset in between (as an always-on spotter runs)
  fbck_stream* s = stream ? fbck_stream_new(m, static_cast<int>(thin)) : nullptr;
  if (stream && !s) status = -1;
  for (size_t u = 0; u < x.size() / in && status == 0; ++u) {
    const float* utt = x.data() + u * in;
    if (stream) {
      // a chunk of n frames: (outer, n, inner) around the time axis
      size_t dims[8], outer = 1, inner = 1;
      const size_t rank = fbck_input_dims(m, dims, 8);
      const int t_axis = fbck_time_axis(m);
      for (int i = 0; i < (int)rank && i < 8; ++i) (i < t_axis ? outer : inner) *= (i == t_axis ? 1 : dims[i]);
      status = fbck_stream_reset(s);
      for (size_t t = 0; t < frames && status == 0; t += stream) {
        const size_t n = t + stream <= frames ? stream : frames - t;
        chunk.resize(outer * n * inner);
        if (inner == 1 && n == 1) {  // one frame, time last (mels x frames): a strided gather
          const float* src = utt + t;
          float* dst = chunk.data();
          for (size_t o = 0; o < outer; ++o, src += frames) dst[o] = *src;
        } else {
          for (size_t o = 0; o < outer; ++o)
            std::memcpy(&chunk[o * n * inner], utt + (o * frames + t) * inner, n * inner * sizeof(float));
        }
        status = fbck_stream_push(s, chunk.data(), n);
      }
      if (status == 0) status = fbck_stream_finish(s, logits.data());
    } else {
      status = fbck_run(m, utt, frames, static_cast<int>(thin), logits.data());
    }
    if (status == 0 && !quiet) {
      for (size_t k = 0; k < out; ++k) std::printf(k ? " %.9g" : "%.9g", logits[k]);
      std::printf("\n");
    }
  }
  fbck_stream_free(s);
  if (status != 0) std::fprintf(stderr, "fbck_run: %s\n", fbck_last_error());
  fbck_free(m);
  return status == 0 ? 0 : 1;
}
