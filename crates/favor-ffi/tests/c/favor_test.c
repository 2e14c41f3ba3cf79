/* The C ABI from C, against the header and the static library (ci/ffi.sh builds and runs it,
 * under valgrind where it is installed, and under qemu for aarch64):
 *   favor_test DIR
 * where DIR holds q.npy, k.npy, v.npy ([1, 2, 16, 8] float32), out.npy and w.npy, written by
 *   favor run --q q.npy --k k.npy --v v.npy --features 16 --seed 7 --out out.npy
 *   favor projection --features 16 --dim 8 --seed 7 --out w.npy
 * Checks: forward == favor run; a given W == its seeded draw; prefill + steps == causal forward; snapshot round trip; a
 * stream outliving its performer; f16 entry points; every status code, with nothing
 * changed on error; a forward on a thread with a small stack. Exit status 0 when every check
 * holds. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>
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

/* Check 6's shape: d = 64, m = 256 and 150 tokens make the GEMMs take their packed path, the
 * one with stack blocks. */
#define SMALL_L 150
#define SMALL_D 64

struct small_job {
  const FavorPerformer *p;
  const float *x;
  float *out;
  FavorStatus status;
};

static void *small_forward(void *arg) {
  struct small_job *job = arg;
  job->status = favor_forward_f32(job->p, job->x, job->x, job->x, 1, SMALL_L, job->out);
  return NULL;
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

/* IEEE binary16 bits of a finite float below 65504 in magnitude (round to nearest even,
 * subnormals included), as the test's inputs and outputs are. */
static uint16_t to_f16(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  uint32_t sign = (u >> 16) & 0x8000, exp = (u >> 23) & 0xff, mant = u & 0x7fffff;
  int e = (int)exp - 127 + 15;
  /* Normal: drop 13 bits; subnormal (e <= 0): shift the full significand further. */
  uint32_t full = exp == 0 ? mant : (mant | 0x800000);
  int shift = e > 0 ? 13 : 14 - e;
  if (shift > 24) return (uint16_t)sign;
  uint32_t m = full >> shift, rest = full & ((1u << shift) - 1), half = 1u << (shift - 1);
  if (rest > half || (rest == half && (m & 1))) m++;
  /* A carry out of the significand moves into the exponent field: still correct. */
  uint32_t bits = e > 0 ? (((uint32_t)e << 10) + m - 0x400) : m;
  return (uint16_t)(sign | bits);
}

static float from_f16(uint16_t h) {
  float mag = (h >> 10 & 0x1f) == 0 ? ldexpf((float)(h & 0x3ff), -24)
                                      : ldexpf((float)((h & 0x3ff) | 0x400), (h >> 10 & 0x1f) - 25);
  return (h & 0x8000) ? -mag : mag;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR (with q.npy, k.npy, v.npy, out.npy, w.npy)\n", argv[0]);
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

  /* 1b. The same W given explicitly (`favor projection` with the same seed wrote it): the
   * same layer, so the same outputs bit for bit. A row count that disagrees with
   * cfg.features is a configuration error; a null W is refused. */
  {
    static float w[FEATURES * D];
    if (read_npy(argv[1], "w.npy", w, FEATURES * D)) {
      FavorConfig cfg;
      favor_config_default(&cfg);
      cfg.head_dim = D;
      cfg.heads = H;
      cfg.features = FEATURES;
      FavorPerformer *pw = NULL;
      CHECK(favor_performer_new_with_projection(&cfg, w, FEATURES, &pw) == FAVOR_OK && pw,
            "favor_performer_new_with_projection");
      static float given[N];
      CHECK(favor_forward_f32(pw, q, k, v, B, L, given) == FAVOR_OK, "forward with W");
      CHECK(memcmp(given, out, sizeof given) == 0, "a given W differs from its seeded draw by %g",
            max_abs_diff(given, out, N));
      favor_performer_free(pw);
      FavorPerformer *none = NULL;
      CHECK(favor_performer_new_with_projection(&cfg, w, FEATURES - 1, &none) ==
                    FAVOR_ERR_CONFIG && none == NULL,
            "rows != features");
      CHECK(favor_performer_new_with_projection(&cfg, NULL, FEATURES, &none) == FAVOR_ERR_NULL,
            "null W");
    } else {
      failures++;
    }
  }

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

  /* 4b. The f16 stream: prefill and step equal an f32 stream on the rounded inputs, each
   * output rounded once. */
  {
    FavorPerformer *pc3 = make(1);
    FavorStream *s32 = NULL, *s16 = NULL;
    CHECK(favor_stream_new(pc3, B, &s32) == FAVOR_OK && favor_stream_new(pc3, B, &s16) == FAVOR_OK,
          "f16 streams");
    static float pq[N], pk[N], pv[N], po[N];
    static uint16_t pq16[N], pk16[N], pv16[N], po16[N];
    for (int h = 0; h < H; h++)
      for (int i = 0; i < half * D; i++) {
        int src = h * L * D + i, dst = h * half * D + i;
        pq16[dst] = q16[src], pk16[dst] = k16[src], pv16[dst] = v16[src];
        pq[dst] = qr[src], pk[dst] = kr[src], pv[dst] = vr[src];
      }
    CHECK(favor_stream_prefill_f32(s32, pq, pk, pv, half, po) == FAVOR_OK, "prefill f32");
    CHECK(favor_stream_prefill_f16(s16, pq16, pk16, pv16, half, po16) == FAVOR_OK, "prefill f16");
    for (int i = 0; i < H * half * D; i++)
      CHECK(po16[i] == to_f16(po[i]), "f16 prefill output %d: %g vs %g", i, from_f16(po16[i]),
            po[i]);
    float sq[H * D], sk[H * D], sv[H * D], so[H * D];
    uint16_t sq16[H * D], sk16[H * D], sv16[H * D], so16[H * D];
    token(qr, half, sq), token(kr, half, sk), token(vr, half, sv);
    for (int i = 0; i < H * D; i++) sq16[i] = to_f16(sq[i]), sk16[i] = to_f16(sk[i]), sv16[i] = to_f16(sv[i]);
    CHECK(favor_stream_step_f32(s32, sq, sk, sv, so) == FAVOR_OK, "step f32");
    CHECK(favor_stream_step_f16(s16, sq16, sk16, sv16, so16) == FAVOR_OK, "step f16");
    for (int i = 0; i < H * D; i++)
      CHECK(so16[i] == to_f16(so[i]), "f16 step output %d: %g vs %g", i, from_f16(so16[i]), so[i]);
    favor_stream_free(s32);
    favor_stream_free(s16);
    favor_performer_free(pc3);
  }

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
  /* The state's bytes and the output buffer, before and after refused calls. */
  size_t state_len = favor_stream_snapshot_len(r);
  uint8_t *state = malloc(state_len), *after = malloc(state_len);
  CHECK(favor_stream_snapshot(r, state, state_len) == FAVOR_OK, "snapshot before");
  token(q, 0, tq), token(k, 0, tk), token(v, 0, tv);
  tq[0] = NAN;
  for (int i = 0; i < H * D; i++) to[i] = -7.0f;
  CHECK(favor_stream_step_f32(r, tq, tk, tv, to) == FAVOR_ERR_NONFINITE, "NaN step");
  tq[0] = 1e30f;
  CHECK(favor_stream_step_f32(r, tq, tk, tv, to) == FAVOR_ERR_RANGE, "1e30 step");
  CHECK(favor_stream_step_f32(r, tq, NULL, tv, to) == FAVOR_ERR_NULL, "null k step");
  CHECK(favor_stream_step_f32(NULL, tq, tk, tv, to) == FAVOR_ERR_NULL, "null stream");
  CHECK(favor_stream_prefill_f32(r, hq, hk, hv, 0, hout) == FAVOR_ERR_SHAPE, "empty prefill");
  CHECK(favor_stream_tokens(r) == before, "a failed call changed the token count");
  CHECK(favor_stream_snapshot(r, after, state_len) == FAVOR_OK, "snapshot after");
  CHECK(memcmp(state, after, state_len) == 0, "a failed call changed the stream's state");
  for (int i = 0; i < H * D; i++) CHECK(to[i] == -7.0f, "a failed step wrote its output");
  CHECK(favor_stream_new(pc2, 0, &no_stream) == FAVOR_ERR_SHAPE, "a stream of batch 0");
  free(state);
  free(after);
  CHECK(favor_selftest_panic() == FAVOR_ERR_PANIC, "panics are caught");
  CHECK(strstr(favor_last_error(), "panicked") != NULL, "panic message");
  CHECK(favor_stream_reset(r) == FAVOR_OK && favor_stream_tokens(r) == 0, "reset");

  /* 6. A host's worker thread with a small stack: musl's default, 128 KiB. The library
   * packs GEMM blocks on the stack (56 KiB); a forward in f64, one head, no thread pool, runs
   * there and gives the bits it gives on the main thread, bidirectional and causal. */
  {
    static float x[SMALL_L * SMALL_D], on_main[SMALL_L * SMALL_D], on_small[SMALL_L * SMALL_D];
    for (int i = 0; i < SMALL_L * SMALL_D; i++) x[i] = (float)((i * 7919) % 101) / 200.0f - 0.25f;
    for (int causal = 0; causal < 2; causal++) {
      FavorConfig cfg;
      favor_config_default(&cfg);
      cfg.head_dim = SMALL_D;
      cfg.heads = 1;
      cfg.features = 256;
      cfg.seed = SEED;
      cfg.causal = (uint32_t)causal;
      cfg.precision = FAVOR_PRECISION_F64;
      cfg.parallel = 0;
      FavorPerformer *ps = NULL;
      CHECK(favor_performer_new(&cfg, &ps) == FAVOR_OK && ps, "d = 64 performer");
      CHECK(favor_forward_f32(ps, x, x, x, 1, SMALL_L, on_main) == FAVOR_OK, "forward on main");
      struct small_job job = {ps, x, on_small, FAVOR_ERR_PANIC};
      pthread_attr_t attr;
      pthread_t t;
      int ok = pthread_attr_init(&attr) == 0 &&
               pthread_attr_setstacksize(&attr, (size_t)128 << 10) == 0 &&
               pthread_create(&t, &attr, small_forward, &job) == 0 && pthread_join(t, NULL) == 0;
      pthread_attr_destroy(&attr);
      CHECK(ok && job.status == FAVOR_OK, "forward on a 128 KiB thread (causal=%d): %d", causal,
            job.status);
      CHECK(memcmp(on_main, on_small, sizeof on_main) == 0,
            "a small thread's forward differs by %g (causal=%d)",
            max_abs_diff(on_main, on_small, SMALL_L * SMALL_D), causal);
      favor_performer_free(ps);
    }
  }

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
