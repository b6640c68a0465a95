/**
 * The package against the repository's contract: the committed generated types are what openapi.yaml
 * generates now, and every problem type the broker documents has its own error class.
 */
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { KNOWN_PROBLEM_SLUGS, PROBLEM_TYPE_PREFIX } from '../src/errors.js';
import { CONTRACT, GENERATED, renderTypes } from '../scripts/generate-types.js';

describe('contract', () => {
  it('src/generated/openapi.ts is what openapi.yaml generates (run `npm run generate` if not)', async () => {
    const committed = await readFile(GENERATED, 'utf8');
    const regenerated = await renderTypes();
    assert.ok(committed === regenerated, 'src/generated/openapi.ts is stale: run `npm run generate` in clients/typescript');
  });

  it('every problem type in info.x-problem-types maps to its own error class, and no other', async () => {
    const yaml = await readFile(CONTRACT, 'utf8');
    const documented = [...yaml.matchAll(/^\s*- type: (urn:session-broker:problem:[a-z-]+)\s*$/gm)].map((match) => match[1]!.slice(PROBLEM_TYPE_PREFIX.length));
    assert.ok(documented.length >= 18, `found ${documented.length} problem types in openapi.yaml`);
    assert.deepEqual([...KNOWN_PROBLEM_SLUGS].sort(), [...documented].sort());
  });
});
