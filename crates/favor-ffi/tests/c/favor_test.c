/* The C ABI from C, against the header and the static library (ci/ffi.sh builds and runs it,
 * under valgrind where it is installed, and under qemu for aarch64):
 *   favor_test DIR
 * where DIR holds q.npy, k.npy, v.npy ([1, 2, 16, 8] float32) and out.npy, written by
 *   favor run --q q.npy --k k.npy --v v.npy --features 16 --seed 7 --out out.npy
 * Checks: forward == favor run; prefill + steps == causal forward; snapshot round trip; a
 * stream outliving its performer; f16 entry points; every status code, with nothing
 * changed on error. Exit status 0 when every check holds. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "favor.h"

#define B 1
#define H 2
#define L 16
#define D 8
#define N (B * H * L * D)
#define FEATURES 16
#define SEED 7

static int failures = 0;

#define CHECK(cond, ...)                                            \
  do {                                                              \
    if (!(cond)) {                                                  \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);          \
      fprintf(stderr, __VA_ARGS__);                                 \
      fprintf(stderr, " (last error: %s)\n", favor_last_error());   \
      failures++;                                                   \
    }                                                               \
  } while (0)

/* Reads a little-endian float32 .npy of n elements (format 1.0 or 2.0, C order). */
static int read_npy(const char *dir, const char *name, float *out, size_t n) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "cannot open %s\n", path);
    return 0;
  }
  unsigned char magic[8];
  size_t header = 0;
  int ok = fread(magic, 1, 8, f) == 8 && memcmp(magic, "\x93NUMPY", 6) == 0;
  if (ok && magic[6] == 1) {
    unsigned char h[2];
    ok = fread(h, 1, 2, f) == 2;
    header = (size_t)h[0] | (size_t)h[1] << 8;
  } else if (ok) {
    unsigned char h[4];
    ok = fread(h, 1, 4, f) == 4;
    header = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24;
  }
  char *text = ok ? calloc(header + 1, 1) : NULL;
  ok = text && fread(text, 1, header, f) == header && strstr(text, "'<f4'") &&
       strstr(text, "'fortran_order': False");
  free(text);
  ok = ok && fread(out, sizeof(float), n, f) == n;
  fclose(f);
  if (!ok) fprintf(stderr, "%s: not a float32 .npy of %zu elements\n", path, n);
  return ok;
}

static FavorPerformer *make(int causal) {
  FavorConfig cfg;
  favor_config_default(&cfg);
  cfg.head_dim = D;
  cfg.heads = H;
  cfg.features = FEATURES;
  cfg.seed = SEED;
  cfg.causal = (uint32_t)causal;
  FavorPerformer *p = NULL;
  FavorStatus st = favor_performer_new(&cfg, &p);
  CHECK(st == FAVOR_OK && p != NULL, "favor_performer_new(causal=%d) = %d", causal, st);
  return p;
}

static float max_abs_diff(const float *a, const float *b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; i++) {
    float d = fabsf(a[i] - b[i]);
    if (!(d <= m)) m = d; /* NaN propagates as a failure */
  }
  return m;
}

/* Token t of every head of a [1, H, L, D] tensor as a [1, H, 1, D] one. */
static void token(const float *x, int t, float *row) {
  for (int h = 0; h < H; h++) memcpy(row + h * D, x + (h * L + t) * D, D * sizeof(float));
}

/* IEEE binary16 bits of a float (round to nearest even; normal range only, as here). */
static uint16_t to_f16(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  uint32_t sign = (u >> 16) & 0x8000, exp = (u >> 23) & 0xff, mant = u & 0x7fffff;
  if (exp == 0) return (uint16_t)sign;
  int e = (int)exp - 127 + 15;
  uint32_t m = mant >> 13, rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (m & 1))) m++;
  uint32_t bits = ((uint32_t)e << 10) + m;
  return (uint16_t)(sign | bits);
}

static float from_f16(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
  uint32_t u = exp == 0 ? sign : sign | (exp - 15 + 127) << 23 | mant << 13;
  float x;
  memcpy(&x, &u, 4);
  return x;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR (with q.npy, k.npy, v.npy, out.npy)\n", argv[0]);
    return 2;
  }
  static float q[N], k[N], v[N], want[N], out[N], causal_out[N], streamed[N];
  if (!read_npy(argv[1], "q.npy", q, N) || !read_npy(argv[1], "k.npy", k, N) ||
      !read_npy(argv[1], "v.npy", v, N) || !read_npy(argv[1], "out.npy", want, N))
    return 2;
  printf("favor %s\n", favor_version());

  /* 1. forward == `favor run` with the same configuration. The same library underneath,
   * but not always the same SIMD backend (valgrind hides AVX-512, qemu has no AVX): the
   * backends round differently (FMA, reduction order), by a few ulp of each output here;
   * another seed or feature count would differ by ~0.1. */
  float vmax = 0;
  for (int i = 0; i < N; i++) vmax = fmaxf(vmax, fabsf(v[i]));
  FavorPerformer *p = make(0);
  CHECK(favor_forward_f32(p, q, k, v, B, L, out) == FAVOR_OK, "forward");
  CHECK(max_abs_diff(out, want, N) <= 1e-5f * vmax, "forward differs from favor run by %g",
        max_abs_diff(out, want, N));
  CHECK(strcmp(favor_last_error(), "") == 0, "last error after a success: %s",
        favor_last_error());

  /* 2. prefill of the first half + steps == causal forward; then the stream outlives its
   * performer. Steps map each token on its own: equal to rounding. */
  FavorPerformer *pc = make(1);
  CHECK(favor_forward_f32(pc, q, k, v, B, L, causal_out) == FAVOR_OK, "causal forward");
  FavorStream *s = NULL;
  CHECK(favor_stream_new(pc, B, &s) == FAVOR_OK, "stream_new");
  favor_performer_free(pc);
  static float hq[N], hk[N], hv[N], hout[N];
  const int half = L / 2;
  for (int h = 0; h < H; h++) {
    memcpy(hq + h * half * D, q + h * L * D, half * D * sizeof(float));
    memcpy(hk + h * half * D, k + h * L * D, half * D * sizeof(float));
    memcpy(hv + h * half * D, v + h * L * D, half * D * sizeof(float));
  }
  CHECK(favor_stream_prefill_f32(s, hq, hk, hv, half, hout) == FAVOR_OK, "prefill");
  for (int h = 0; h < H; h++)
    memcpy(streamed + h * L * D, hout + h * half * D, half * D * sizeof(float));
  size_t snap_len = favor_stream_snapshot_len(s);
  CHECK(snap_len > 0, "snapshot_len");
  uint8_t *snap = malloc(snap_len);
  CHECK(favor_stream_snapshot(s, snap, snap_len) == FAVOR_OK, "snapshot");
  float tq[H * D], tk[H * D], tv[H * D], to[H * D];
  for (int t = half; t < L; t++) {
    token(q, t, tq), token(k, t, tk), token(v, t, tv);
    CHECK(favor_stream_step_f32(s, tq, tk, tv, to) == FAVOR_OK, "step %d", t);
    for (int h = 0; h < H; h++) memcpy(streamed + (h * L + t) * D, to + h * D, D * sizeof(float));
  }
  CHECK(favor_stream_tokens(s) == L, "tokens = %llu", (unsigned long long)favor_stream_tokens(s));
  float err = max_abs_diff(streamed, causal_out, N);
  CHECK(err <= 1e-5f * vmax, "prefill + steps vs causal forward: %g", err);

  /* 3. snapshot round trip: a fresh stream restored from the snapshot continues with the
   * same bits. */
  FavorPerformer *pc2 = make(1);
  FavorStream *r = NULL;
  CHECK(favor_stream_new(pc2, B, &r) == FAVOR_OK, "stream_new 2");
  CHECK(favor_stream_restore(r, snap, snap_len) == FAVOR_OK, "restore");
  CHECK(favor_stream_tokens(r) == (uint64_t)half, "restored tokens");
  for (int t = half; t < L; t++) {
    token(q, t, tq), token(k, t, tk), token(v, t, tv);
    CHECK(favor_stream_step_f32(r, tq, tk, tv, to) == FAVOR_OK, "restored step %d", t);
    for (int h = 0; h < H; h++)
      CHECK(memcmp(to + h * D, streamed + (h * L + t) * D, D * sizeof(float)) == 0,
            "restored stream differs at token %d head %d", t, h);
  }

  /* 4. f16: the same attention on inputs rounded to binary16, output rounded once. */
  static uint16_t q16[N], k16[N], v16[N], o16[N];
  static float qr[N], kr[N], vr[N], ref[N];
  for (int i = 0; i < N; i++) {
    q16[i] = to_f16(q[i]), k16[i] = to_f16(k[i]), v16[i] = to_f16(v[i]);
    qr[i] = from_f16(q16[i]), kr[i] = from_f16(k16[i]), vr[i] = from_f16(v16[i]);
  }
  CHECK(favor_forward_f16(p, q16, k16, v16, B, L, o16) == FAVOR_OK, "forward_f16");
  CHECK(favor_forward_f32(p, qr, kr, vr, B, L, ref) == FAVOR_OK, "forward of rounded");
  for (int i = 0; i < N; i++)
    CHECK(fabsf(from_f16(o16[i]) - ref[i]) <= fabsf(ref[i]) * 0x1p-11f + 0x1p-24f,
          "f16 output %d: %g vs %g", i, from_f16(o16[i]), ref[i]);

  /* 5. Every status code; nothing changes on error (outputs and stream state). */
  float sentinel[N];
  for (int i = 0; i < N; i++) sentinel[i] = out[i] = -7.0f;
  CHECK(favor_forward_f32(p, NULL, k, v, B, L, out) == FAVOR_ERR_NULL, "null q");
  CHECK(favor_forward_f32(NULL, q, k, v, B, L, out) == FAVOR_ERR_NULL, "null performer");
  CHECK(strlen(favor_last_error()) > 0, "an error has a message");
  CHECK(favor_forward_f32(p, q, k, v, 0, L, out) == FAVOR_ERR_SHAPE, "batch 0");
  CHECK(favor_forward_f32(p, q, k, v, SIZE_MAX / 2, L, out) == FAVOR_ERR_SHAPE, "overflow");
  static float bad[N];
  memcpy(bad, q, sizeof q);
  bad[5] = NAN;
  CHECK(favor_forward_f32(p, bad, k, v, B, L, out) == FAVOR_ERR_NONFINITE, "NaN");
  bad[5] = 1e30f;
  CHECK(favor_forward_f32(p, bad, k, v, B, L, out) == FAVOR_ERR_RANGE, "1e30");
  CHECK(memcmp(out, sentinel, sizeof out) == 0, "a failed forward wrote its output");
  FavorConfig cfg;
  favor_config_default(&cfg);
  cfg.head_dim = 0;
  FavorPerformer *none = NULL;
  CHECK(favor_performer_new(&cfg, &none) == FAVOR_ERR_CONFIG && none == NULL, "head_dim 0");
  favor_config_default(&cfg);
  cfg.kernel = 99;
  CHECK(favor_performer_new(&cfg, &none) == FAVOR_ERR_CONFIG, "kernel 99");
  favor_config_default(&cfg);
  cfg.features = 0xffffffffu;
  cfg.head_dim = 0xffffu;
  CHECK(favor_performer_new(&cfg, &none) == FAVOR_ERR_ALLOC, "a projection too large");
  FavorStream *no_stream = NULL;
  CHECK(favor_stream_new(p, B, &no_stream) == FAVOR_ERR_CONFIG && no_stream == NULL,
        "stream of a bidirectional layer");
  uint64_t before = favor_stream_tokens(r);
  snap[snap_len / 2] ^= 1;
  CHECK(favor_stream_restore(r, snap, snap_len) == FAVOR_ERR_SNAPSHOT, "corrupted snapshot");
  CHECK(favor_stream_restore(r, snap, 3) == FAVOR_ERR_SNAPSHOT, "truncated snapshot");
  CHECK(favor_stream_snapshot(r, snap, 3) == FAVOR_ERR_SHAPE, "short snapshot buffer");
  token(q, 0, tq);
  tq[0] = NAN;
  CHECK(favor_stream_step_f32(r, tq, tk, tv, to) == FAVOR_ERR_NONFINITE, "NaN step");
  CHECK(favor_stream_tokens(r) == before, "a failed call changed the stream");
  CHECK(favor_selftest_panic() == FAVOR_ERR_PANIC, "panics are caught");
  CHECK(strstr(favor_last_error(), "panicked") != NULL, "panic message");
  CHECK(favor_stream_reset(r) == FAVOR_OK && favor_stream_tokens(r) == 0, "reset");

  free(snap);
  favor_stream_free(s);
  favor_stream_free(r);
  favor_performer_free(p);
  favor_performer_free(pc2);
  favor_performer_free(NULL);
  favor_stream_free(NULL);
  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("all C ABI checks passed\n");
  return 0;
}
