/**
 * The package as users install it: its built entry points (imported by name through package.json
 * "exports", so `npm run build` must have run) and its promise of no runtime dependency.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';

const manifest = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as Record<string, unknown>;

/** Runtime import specifiers of a built module and, recursively, of the package modules it imports. */
async function runtimeImports(entry: URL, seen = new Set<string>()): Promise<Set<string>> {
  const external = new Set<string>();
  if (seen.has(entry.href)) return external;
  seen.add(entry.href);
  const code = await readFile(entry, 'utf8');
  for (const match of code.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+['"]([^'"]+)['"]|^\s*import\s+['"]([^'"]+)['"]/gm)) {
    const specifier = (match[1] ?? match[2])!;
    if (specifier.startsWith('.')) {
      for (const name of await runtimeImports(new URL(specifier, entry), seen)) external.add(name);
    } else {
      external.add(specifier);
    }
  }
  return external;
}

describe('package', () => {
  it('has no runtime dependencies; the MCP SDK is an optional peer', () => {
    assert.equal(manifest['dependencies'], undefined);
    assert.deepEqual(Object.keys(manifest['peerDependencies'] as object), ['@modelcontextprotocol/sdk']);
  });

  it('the client entry needs only Node built-ins, tier 1 too; only tier 2 loads the SDK', async () => {
    const builtins = (names: Set<string>) => [...names].filter((name) => !name.startsWith('node:'));
    assert.deepEqual(builtins(await runtimeImports(new URL('../dist/index.js', import.meta.url))), []);
    assert.deepEqual(builtins(await runtimeImports(new URL('../dist/mcp/index.js', import.meta.url))), []);
    const stateful = builtins(await runtimeImports(new URL('../dist/mcp/stateful.js', import.meta.url)));
    assert.deepEqual(stateful, ['@modelcontextprotocol/sdk/server/webStandardStreamableHttp.js']);
  });

  it('every entry point imports by package name and exports what the README documents', async () => {
    const root = await import('session-broker-client');
    for (const name of ['SessionBroker', 'BrokerSessionManager', 'RequestAnalytics', 'BrokerUnavailable', 'SessionNotFound', 'QuotaExceeded']) {
      assert.equal(typeof (root as Record<string, unknown>)[name], 'function', name);
    }
    const mcp = await import('session-broker-client/mcp');
    for (const name of ['brokerSessions', 'withBrokerSessions', 'brokerSessionsFetch', 'principalFromAuthInfo']) {
      assert.equal(typeof (mcp as Record<string, unknown>)[name], 'function', name);
    }
    const stateful = await import('session-broker-client/mcp/stateful');
    assert.equal(typeof stateful.StatefulBrokerSessions, 'function');
  });
});
