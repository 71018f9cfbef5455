// ecnet local's pod namespaces: two `ecnet local` processes that pick the same free slot at once (two `exec`s
// started together) must not pull a namespace from under each other. The second create fails with "File
// exists" (and its caller takes the next slot); the first pod keeps its namespace and its interface.
// Needs root (network namespaces); the namespaces are this test's own and removed even when it fails.
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPod, deleteNetns, netnsExists } from '../src/local/net.js';
import type { MemberTopology } from '../src/local/topology.js';
import { isRoot, suffix } from './helpers/host.js';

describe.skipIf(!isRoot)('ecnet local: pod namespaces (needs root)', () => {
  const node = `ecnet-t${suffix()}`;
  const t = { name: 'cluster-9', index: 9, nodeNs: node, podPrefix: '10.249.9', nodePodIp: '10.249.9.1' } as MemberTopology;
  beforeAll(() => {
    execFileSync('ip', ['netns', 'add', node]);
  });
  afterAll(() => {
    for (const slot of [3, 4]) deleteNetns(`${node}-p${slot}`);
    deleteNetns(node);
  });

  it("a pod's namespace is never replaced by another create of the same slot", () => {
    const first = createPod(t, 3, 'first');
    let err: unknown;
    try {
      createPod(t, 3, 'second');
    } catch (e) {
      err = e;
    }
    expect(String((err as { stderr?: unknown } | undefined)?.stderr ?? err)).toMatch(/File exists/);
    // The first pod still has its namespace, its address and its way out.
    expect(netnsExists(first.ns)).toBe(true);
    expect(execFileSync('ip', ['-n', first.ns, '-4', 'addr', 'show', 'dev', 'eth0'], { encoding: 'utf8' })).toContain(first.ip);
    // The next slot works.
    expect(createPod(t, 4, 'second').ns).toBe(`${node}-p4`);
  });
});
