// The C ABI from JavaScript: favor_ffi.wasm (wasm32-unknown-unknown, simd128) driven through
// its exports, as a web page or a Node program would (ci/wasm.sh runs it):
//   node favor_test.mjs favor_ffi.wasm DIR
// DIR holds q.npy, k.npy, v.npy ([1, 2, 16, 8] float32) and out.npy from
//   favor run --q q.npy --k k.npy --v v.npy --features 16 --seed 7 --out out.npy
// Checks forward == favor run (to rounding: another SIMD backend), a stream's prefill and
// step, and an error's status and message. Exit code 0 when every check holds.
import { readFileSync } from "node:fs";
import { argv, exit } from "node:process";

const [, , wasmPath, dir] = argv;
const { instance } = await WebAssembly.instantiate(readFileSync(wasmPath), {});
const f = instance.exports;
const [B, H, L, D, FEATURES, SEED] = [1, 2, 16, 8, 16, 7n];
const N = B * H * L * D;
let failures = 0;
const check = (ok, what) => {
  if (!ok) {
    console.error(`FAIL: ${what} (last error: ${lastError()})`);
    failures++;
  }
};

// Linear memory can grow during any call: take fresh views after each.
const u8 = () => new Uint8Array(f.memory.buffer);
const f32 = (ptr, n) => new Float32Array(f.memory.buffer, ptr, n);
const lastError = () => {
  const p = f.favor_last_error();
  const bytes = u8();
  let end = p;
  while (bytes[end] !== 0) end++;
  return new TextDecoder().decode(bytes.subarray(p, end));
};

// A little-endian float32 .npy (format 1.0), C order.
function readNpy(name) {
  const buf = readFileSync(`${dir}/${name}`);
  const headerLen = buf.readUInt16LE(8);
  const header = buf.toString("latin1", 10, 10 + headerLen);
  if (!header.includes("'<f4'")) throw new Error(`${name}: not float32`);
  const data = buf.subarray(10 + headerLen);
  return new Float32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
}
const [q, k, v, want] = ["q.npy", "k.npy", "v.npy", "out.npy"].map(readNpy);

// Buffers in the library's memory (pointers are wasm32 addresses: unsigned, never 0).
const alloc = (bytes) => {
  const ptr = f.favor_buffer_new(bytes) >>> 0;
  if (ptr === 0) throw new Error(`favor_buffer_new(${bytes}) failed`);
  return ptr;
};
const put = (array) => {
  const ptr = alloc(array.length * 4);
  f32(ptr, array.length).set(array);
  return ptr;
};
const [qp, kp, vp] = [q, k, v].map(put);
const outp = alloc(N * 4);

// FavorConfig: its C layout on wasm32 (u32 fields, the u64 seed at offset 16), of
// favor_config_size() bytes.
const configSize = f.favor_config_size() >>> 0;
function performer(causal) {
  const cfg = alloc(configSize);
  f.favor_config_default(cfg);
  const view = new DataView(f.memory.buffer);
  view.setUint32(cfg + 0, D, true); // head_dim
  view.setUint32(cfg + 4, H, true); // heads
  view.setUint32(cfg + 8, FEATURES, true); // features
  view.setBigUint64(cfg + 16, SEED, true); // seed
  view.setUint32(cfg + 24, causal ? 1 : 0, true); // causal
  const out = alloc(4);
  check(f.favor_performer_new(cfg, out) === 0, "favor_performer_new");
  const handle = new DataView(f.memory.buffer).getUint32(out, true);
  f.favor_buffer_free(cfg, configSize);
  f.favor_buffer_free(out, 4);
  return handle;
}

const p = performer(false);
check(f.favor_forward_f32(p, qp, kp, vp, B, L, outp) === 0, "forward");
const vmax = v.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
const got = f32(outp, N);
let err = 0;
for (let i = 0; i < N; i++) err = Math.max(err, Math.abs(got[i] - want[i]));
check(err <= 1e-5 * vmax, `forward differs from favor run by ${err}`);
check(lastError() === "", "the last error is empty after a success");
console.log(`forward: max |diff| vs favor run ${err.toExponential(2)}`);

// A stream: prefill all but the last token, then step it; it equals the causal forward.
const pc = performer(true);
const causal = alloc(N * 4);
check(f.favor_forward_f32(pc, qp, kp, vp, B, L, causal) === 0, "causal forward");
const sp = alloc(4);
check(f.favor_stream_new(pc, B, sp) === 0, "stream_new");
const stream = new DataView(f.memory.buffer).getUint32(sp, true);
f.favor_performer_free(pc);
const head = (x, from, to) => {
  const rows = [];
  for (let h = 0; h < H; h++) rows.push(...x.subarray((h * L + from) * D, (h * L + to) * D));
  return Float32Array.from(rows);
};
const [pq, pk, pv] = [q, k, v].map((x) => put(head(x, 0, L - 1)));
const pre = alloc(H * (L - 1) * D * 4);
check(f.favor_stream_prefill_f32(stream, pq, pk, pv, L - 1, pre) === 0, "prefill");
const [tq, tk, tv] = [q, k, v].map((x) => put(head(x, L - 1, L)));
const to = alloc(H * D * 4);
check(f.favor_stream_step_f32(stream, tq, tk, tv, to) === 0, "step");
const last = head(f32(causal, N), L - 1, L);
const stepped = f32(to, H * D);
let serr = 0;
for (let i = 0; i < H * D; i++) serr = Math.max(serr, Math.abs(stepped[i] - last[i]));
check(serr <= 1e-5 * vmax, `step differs from the causal forward by ${serr}`);
check(f.favor_stream_tokens(stream) === BigInt(L), "tokens");

// An error: a NaN query is refused with its status and a message; nothing changes.
f32(tq, 1)[0] = NaN;
check(f.favor_stream_step_f32(stream, tq, tk, tv, to) === 3, "NaN gives FAVOR_ERR_NONFINITE");
check(lastError().includes("NaN"), `message: ${lastError()}`);
check(f.favor_stream_tokens(stream) === BigInt(L), "a failed step changed the stream");
f.favor_stream_free(stream);
f.favor_performer_free(p);
console.log(failures ? `${failures} check(s) failed` : "all JavaScript checks passed");
exit(failures ? 1 : 0);
