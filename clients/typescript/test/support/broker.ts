/**
 * The real broker as a child process (the repository's `.venv/bin/session-broker serve`) on an
 * embedded PostgreSQL in a temporary data dir. Tests stop and restart it to make real outages.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const REPO = fileURLToPath(new URL('../../../../', import.meta.url));
const BROKER_BIN = process.env['BROKER_BIN'] ?? join(REPO, '.venv/bin/session-broker');
const PYTHON = join(REPO, '.venv/bin/python');

export const TENANT_KEY = 'acme-key-0123456789abcdef';
export const OTHER_TENANT_KEY = 'other-key-0123456789abcdef';
export const ADMIN_KEY = 'admin-key-0123456789abcdef';

export interface BrokerProcess {
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  /** Starts it again on the same port and data (sessions survive). */
  start(): Promise<void>;
  /** SIGTERM and wait for exit (the broker then stops its embedded PostgreSQL). */
  stop(): Promise<void>;
  /** Runs SQL on the broker's database (for states only time could produce otherwise). */
  sql(statement: string): Promise<string>;
  /** Stops it and removes its data. */
  dispose(): Promise<void>;
  /** Everything it printed, for failure messages. */
  output(): string;
}

export async function startBroker(env: Record<string, string> = {}): Promise<BrokerProcess> {
  const port = await freePort();
  const dataDir = await mkdtemp(join(tmpdir(), 'sb-ts-kit-'));
  const url = `http://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  let log = '';
  // The broker refuses unknown SESSION_BROKER_* variables, and a developer's own settings must not leak in.
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.toUpperCase().startsWith('SESSION_BROKER_')),
  );
  const fullEnv = {
    ...inherited,
    SESSION_BROKER_PORT: String(port),
    SESSION_BROKER_DATA_DIR: join(dataDir, 'data'),
    SESSION_BROKER_API_KEYS: `acme=${TENANT_KEY},other=${OTHER_TENANT_KEY}`,
    SESSION_BROKER_ADMIN_API_KEYS: `ops=${ADMIN_KEY}`,
    SESSION_BROKER_LOG_LEVEL: 'WARNING',
    SESSION_BROKER_LOG_FORMAT: 'text',
    ...env,
  };
  // If the test process dies without disposing, the broker still gets SIGTERM (and stops PostgreSQL).
  const onExit = () => child?.kill('SIGTERM');
  process.once('exit', onExit);

  const start = async () => {
    const spawned = spawn(BROKER_BIN, ['serve'], { env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    child = spawned;
    spawned.stdout?.on('data', (chunk: Buffer) => (log += chunk.toString()));
    spawned.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
    const exited = new Promise<never>((_, reject) =>
      spawned.once('exit', (code) => reject(new Error(`broker exited with ${code} before it was ready:\n${log}`))),
    );
    exited.catch(() => {}); // observed below only while waiting for readiness
    const deadline = Date.now() + 60_000;
    for (;;) {
      const ready = await Promise.race([isReady(url), exited]);
      if (ready) return;
      if (Date.now() > deadline) throw new Error(`broker not ready after 60 s:\n${log}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };
  const stop = async () => {
    const running = child;
    if (!running || running.exitCode !== null || running.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => running.once('exit', () => resolve()));
    running.kill('SIGTERM');
    const killTimer = setTimeout(() => running.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(killTimer);
  };
  await start();
  return {
    url,
    port,
    dataDir,
    start,
    stop,
    output: () => log,
    sql: async (statement) => {
      const script = `import asyncio, asyncpg, sys
async def main():
    c = await asyncpg.connect(host=sys.argv[1], user='postgres', database='postgres')
    print(await c.execute(sys.argv[2]))
    await c.close()
asyncio.run(main())`;
      const { stdout } = await promisify(execFile)(PYTHON, ['-c', script, join(fullEnv.SESSION_BROKER_DATA_DIR, 'pg'), statement]);
      return stdout.trim();
    },
    dispose: async () => {
      await stop();
      process.removeListener('exit', onExit);
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

async function isReady(url: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1_000) });
    return response.ok;
  } catch {
    return false;
  }
}

/** A port the OS says is free now (bound to 0, read, released). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port'))));
    });
  });
}
