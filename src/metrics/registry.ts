// One Prometheus registry per process: the component's own families, Node's process figures (CPU, memory,
// event loop lag, descriptors) and `ecnet_build_info`. Families are made by the component that counts (e.g.
// proxy/metrics.ts); this module only gives them a home.
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { readFileSync } from 'node:fs';

export type { Registry };

function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** A registry for one component (agent, gateway, controller), with the process's own metrics in it. */
export function componentRegistry(component: string): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const info = new Gauge({ name: 'ecnet_build_info', help: 'Always 1: the version and the component of this process', labelNames: ['version', 'component'], registers: [registry] });
  info.set({ version: version(), component }, 1);
  return registry;
}
