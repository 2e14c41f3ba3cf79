/* The README's C example: a causal 4-head layer, a prompt through a stream, then tokens one
 * at a time, with a snapshot to resume from. Build (after `cargo build --release -p favor-ffi`):
 *   cc -std=c11 hello.c -I crates/favor-ffi/include target/release/libfavor_ffi.a \
 *      -lm -lpthread -ldl -o hello */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "favor.h"

enum { HEADS = 4, DIM = 32, PROMPT = 12 };

static int ok(FavorStatus st, const char *what) {
  if (st != FAVOR_OK) fprintf(stderr, "%s: status %d: %s\n", what, st, favor_last_error());
  return st == FAVOR_OK;
}

int main(void) {
  FavorConfig cfg;
  favor_config_default(&cfg);
  cfg.head_dim = DIM;
  cfg.heads = HEADS;
  cfg.features = 128;
  cfg.causal = 1;
  FavorPerformer *layer = NULL;
  if (!ok(favor_performer_new(&cfg, &layer), "performer")) return 1;

  /* q, k, v of the prompt: [batch 1, HEADS, PROMPT, DIM], row-major. */
  static float q[HEADS * PROMPT * DIM], k[HEADS * PROMPT * DIM], v[HEADS * PROMPT * DIM];
  static float out[HEADS * PROMPT * DIM];
  for (int i = 0; i < HEADS * PROMPT * DIM; i++) {
    q[i] = 0.3f * sinf(0.37f * i), k[i] = 0.3f * cosf(0.11f * i), v[i] = sinf(0.05f * i);
  }
  FavorStream *stream = NULL;
  if (!ok(favor_stream_new(layer, 1, &stream), "stream")) return 1;
  favor_performer_free(layer); /* the stream keeps what it needs */
  if (!ok(favor_stream_prefill_f32(stream, q, k, v, PROMPT, out), "prefill")) return 1;

  float tq[HEADS * DIM], tk[HEADS * DIM], tv[HEADS * DIM], to[HEADS * DIM];
  for (int t = 0; t < 4; t++) {
    for (int i = 0; i < HEADS * DIM; i++) {
      tq[i] = 0.2f * sinf(0.7f * (i + t)), tk[i] = tq[i], tv[i] = cosf(0.3f * (i + t));
    }
    if (!ok(favor_stream_step_f32(stream, tq, tk, tv, to), "step")) return 1;
    printf("token %llu: head 0 output[0] = %+.5f\n",
           (unsigned long long)favor_stream_tokens(stream), to[0]);
  }
  size_t n = favor_stream_snapshot_len(stream);
  unsigned char *snap = malloc(n);
  if (!snap || !ok(favor_stream_snapshot(stream, snap, n), "snapshot")) return 1;
  printf("state: %zu bytes after %llu tokens, whatever the length\n", n,
         (unsigned long long)favor_stream_tokens(stream));
  /* A NaN is refused and changes nothing. */
  tq[0] = NAN;
  FavorStatus st = favor_stream_step_f32(stream, tq, tk, tv, to);
  printf("a NaN query: status %d (%s)\n", st, favor_last_error());
  free(snap);
  favor_stream_free(stream);
  return 0;
}
