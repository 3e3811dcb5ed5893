// Shared by the server tests: start a server process, wait for its "listen=" startup line, stop it.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));

// The openai package from tests/oracle/node_modules (installed by scripts/setup.sh with npm ci).
export async function loadOpenAI() {
  const require = createRequire(path.join(here, "..", "oracle", "package.json"));
  const mod = await import(require.resolve("openai"));
  return mod.default ?? mod.OpenAI;
}

export function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, "")] = argv[i + 1];
  return out;
}

// Starts `cmd args`, resolves { url, proc, output } once a line holds listen=http://HOST:PORT.
export function startServer(cmd, argv, { timeoutMs = 120000, env = {} } = {}) {
  return new Promise((resolve, reject) => {
    const proc = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
    let output = "";
    const timer = setTimeout(() => {
      proc.kill("SIGKILL");
      reject(new Error(`server did not start in ${timeoutMs} ms:\n${output}`));
    }, timeoutMs);
    const onData = (chunk) => {
      output += chunk.toString();
      const m = output.match(/listen=(http:\/\/[^\s"]+)/);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1], proc, output: () => output });
      }
    };
    proc.stdout.on("data", onData);
    proc.stderr.on("data", (c) => { output += c.toString(); });
    proc.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before listening:\n${output}`));
    });
  });
}

export async function stopServer(server) {
  if (server.proc.exitCode !== null) return server.proc.exitCode;
  const exited = new Promise((r) => server.proc.once("exit", (code, signal) => r(code ?? signal)));
  server.proc.kill("SIGTERM");
  const timer = setTimeout(() => server.proc.kill("SIGKILL"), 10000);
  const code = await exited;
  clearTimeout(timer);
  return code;
}

// A tiny test runner: named async tests, run in order, failures reported with the server's output.
export async function run(tests, servers) {
  let failed = 0;
  for (const [name, fn] of tests) {
    const t0 = Date.now();
    try {
      await fn();
      console.log(`ok   ${name} (${Date.now() - t0} ms)`);
    } catch (e) {
      failed++;
      console.log(`FAIL ${name}: ${e.stack ?? e}`);
    }
  }
  for (const s of servers) {
    const code = await stopServer(s);
    if (code !== 0) {
      failed++;
      console.log(`FAIL server exit status ${code} (expected 0 after SIGTERM):\n${s.output().slice(-4000)}`);
    }
  }
  if (failed) {
    for (const s of servers) console.log(`--- server output (tail) ---\n${s.output().slice(-4000)}`);
    console.log(`${failed} failed`);
    process.exit(1);
  }
  console.log(`all ${tests.length} passed`);
}
