/* The FBCK runtime's C API: load a binarize artifact (.bnn) and run it, with no Python.
 *
 *   fbck_model* m = fbck_load("kws.bnn");
 *   if (!m) { fprintf(stderr, "%s\n", fbck_last_error()); return 1; }
 *   float logits[12];
 *   if (fbck_run(m, features, fbck_frames(m), 0, logits) != 0) { ... fbck_last_error() ... }
 *   fbck_free(m);
 *
 * Features of one utterance are fbck_input_size(m) float32 values laid out as the model's input
 * (batch excluded, e.g. 1 x mels x frames), with fbck_frames(m) frames on its time axis. Every
 * function that can fail returns NULL or a non-zero status and sets a message for
 * fbck_last_error() (per thread). A loaded model is immutable: fbck_run may be called on it from
 * many threads at once; a stream belongs to one thread at a time.
 */
#ifndef FBCK_H
#define FBCK_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct fbck_model fbck_model;
typedef struct fbck_stream fbck_stream;

/* Loads and checks an artifact file (or bytes in memory, copied); NULL on error. */
fbck_model* fbck_load(const char* path);
fbck_model* fbck_load_buffer(const void* data, size_t size);
void fbck_free(fbck_model* model);

size_t fbck_input_size(const fbck_model* model);  /* floats per utterance */
size_t fbck_output_size(const fbck_model* model); /* logits per utterance */
size_t fbck_frames(const fbck_model* model);      /* frames on the input's time axis */
/* The input's shape without the batch: its rank, and up to `max` sizes written to dims. */
size_t fbck_input_dims(const fbck_model* model, size_t* dims, size_t max);
int fbck_time_axis(const fbck_model* model);      /* index of the time axis in those dims, -1: none */
int fbck_num_options(const fbck_model* model);    /* depth options compiled in */
int fbck_option(const fbck_model* model, int i);  /* the i-th one (the first is the default) */
const char* fbck_impl(const fbck_model* model);   /* the kernels in use: ref, avx2, neon... */

/* One utterance at depth option `thin`: n_frames must be fbck_frames(model); writes
 * fbck_output_size(model) floats. Returns 0, or -1 (bad option, size, NaN/inf input). */
int fbck_run(const fbck_model* model, const float* features, size_t n_frames, int thin, float* logits);

/* Frame-by-frame: push frames (n_frames on the time axis, the other axes as the input), then
 * finish, which writes the logits (equal to fbck_run on the whole utterance). */
fbck_stream* fbck_stream_new(const fbck_model* model, int thin);
int fbck_stream_push(fbck_stream* stream, const float* frames, size_t n_frames);
int fbck_stream_finish(fbck_stream* stream, float* logits);
/* Starts the next utterance on the same stream (no allocation). */
int fbck_stream_reset(fbck_stream* stream);
void fbck_stream_free(fbck_stream* stream);

/* The last error of this thread ("" if none). */
const char* fbck_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* FBCK_H */
