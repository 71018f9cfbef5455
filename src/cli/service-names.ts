// Which service a datapath entry is for, from the agent's /routes: by address (ClusterIP:port), else by the id
// the records carry. For `ecnet bpf dump`, which reads the kernel maps and knows only addresses and ids.
import type { RouteReport } from '../agent/admin.js';
import { ConfigError } from '../config.js';
import { normalizeIp } from '../net/address.js';

export interface ServiceName {
  namespace: string;
  name: string;
  port: number;
}

export interface ServiceNames {
  /** The service of an address (any spelling of the IP), else of the id; undefined when neither is known. */
  of(ip: string, port: number, id?: number): ServiceName | undefined;
}

const addressKey = (ip: string, port: number): string => {
  try {
    return `${normalizeIp(ip)}|${port}`;
  } catch {
    return `${ip}|${port}`;
  }
};

/** The names in the agent's route reports. */
export function serviceNames(reports: readonly RouteReport[]): ServiceNames {
  const byAddress = new Map<string, ServiceName>();
  const byId = new Map<number, ServiceName>();
  for (const r of reports) {
    const name = { namespace: r.namespace, name: r.service, port: r.port };
    const sep = r.address.lastIndexOf(':');
    byAddress.set(addressKey(r.address.slice(0, sep).replace(/^\[|\]$/g, ''), Number(r.address.slice(sep + 1))), name);
    if (r.id !== undefined) byId.set(r.id, name);
  }
  return {
    of: (ip, port, id) => byAddress.get(addressKey(ip, port)) ?? (id !== undefined ? byId.get(id) : undefined),
  };
}

export const formatServiceName = (s: ServiceName | undefined): string => (s ? `${s.namespace}/${s.name}:${s.port}` : '-');

/** The agent's route reports; a ConfigError (with the cause) when it cannot be asked. */
export async function fetchRoutes(admin: string, timeoutMs = 2_000): Promise<RouteReport[]> {
  try {
    const res = await fetch(`http://${admin}/routes`, { signal: AbortSignal.timeout(timeoutMs) });
    if (res.status !== 200) throw new Error(`/routes answered ${res.status}`);
    const body = (await res.json()) as unknown;
    if (!Array.isArray(body)) throw new Error('/routes did not answer a list');
    return body as RouteReport[];
  } catch (cause) {
    throw new ConfigError(`cannot reach the agent at ${admin} (is \`ecnet agent\` running?)`, { cause });
  }
}
