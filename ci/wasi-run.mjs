#!/usr/bin/env -S node --no-warnings
// Runs a wasm32-wasip1 test binary under Node's WASI (cargo's runner for that target, see
// .cargo/config.toml): the whole file system preopened, arguments and environment passed
// through, the module's exit code returned.
import { readFile } from "node:fs/promises";
import { argv, env, exit } from "node:process";
import { WASI } from "node:wasi";

const [, , module, ...args] = argv;
const wasi = new WASI({
  version: "preview1",
  args: [module, ...args],
  env,
  preopens: { "/": "/" },
  returnOnExit: true,
});
const compiled = await WebAssembly.compile(await readFile(module));
const instance = await WebAssembly.instantiate(compiled, wasi.getImportObject());
exit(wasi.start(instance));
