// Starts the web-chat example on 127.0.0.1 (an ephemeral port) for the node
// tests: the browser test (tests/browser) and the JavaScript client's tests
// (clients/js/test). WEB_CHAT_BIN overrides the binary.

import { spawn } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

/**
 * Spawns web-chat and resolves with `{process, url}` once it prints the
 * address it listens on (`url` is `http://127.0.0.1:PORT/`); rejects if it
 * exits first or says nothing within 30 s. Stop it with `process.kill("SIGINT")`.
 */
export function startWebChat() {
  const bin = process.env.WEB_CHAT_BIN || join(repo, "target/debug/examples/web-chat");
  const child = spawn(bin, ["--addr", "127.0.0.1:0"], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || "warn" },
  });
  return new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error("web-chat did not start")), 30_000);
    let out = "";
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const m = out.match(/listening on (http:\/\/\S+)/);
      if (m) {
        clearTimeout(timer);
        ok({ process: child, url: m[1] });
      }
    });
    child.on("error", (e) => fail(new Error(`web-chat (${bin}) did not start: ${e.message}`)));
    child.on("exit", (code) => fail(new Error(`web-chat exited with ${code}`)));
  });
}
