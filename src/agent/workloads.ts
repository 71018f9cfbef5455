// Which workload is behind a connection the node proxy accepts: the pods of this node by address, so the proxy
// can assert `namespace/serviceaccount` to the gateway (which enforces ServiceExport.spec.serviceAccountName).
// A redirected connect() comes from the pod's own network namespace, so its source address is the pod's IP; a
// host-network process has the node's address, which is no pod's here, and gets no workload.
import type { Informer, Source, WatchEvent } from '../sources/source.js';
import { Kinds } from '../sources/source.js';

/** The fields of a Pod read here. */
interface PodFields {
  apiVersion: string;
  kind: 'Pod';
  metadata: { name: string; namespace?: string };
  spec?: { nodeName?: string; serviceAccountName?: string; hostNetwork?: boolean };
  status?: { podIP?: string; podIPs?: { ip: string }[] };
}

export class PodWorkloads {
  /** address → the pod (namespace/name) that has it, and its workload; a reused address belongs to the newer pod. */
  readonly #byIp = new Map<string, { pod: string; workload: string }>();
  readonly #ipsOf = new Map<string, string[]>();
  readonly #informer: Informer<PodFields & { metadata: { name: string } }>;

  constructor(source: Source, readonly nodeName: string) {
    this.#informer = source.informer<PodFields & { metadata: { name: string } }>(Kinds.Pod, {
      fieldSelector: `spec.nodeName=${nodeName}`,
      onEvent: (e) => this.#apply(e),
    });
  }

  #apply(e: WatchEvent<PodFields & { metadata: { name: string } }>): void {
    const key = `${e.object.metadata.namespace ?? 'default'}/${e.object.metadata.name}`;
    for (const ip of this.#ipsOf.get(key) ?? []) if (this.#byIp.get(ip)?.pod === key) this.#byIp.delete(ip);
    this.#ipsOf.delete(key);
    const p = e.object;
    // Only this node's own pods, in their own network namespace (defensive: the selector says so already).
    if (e.type === 'deleted' || p.spec?.nodeName !== this.nodeName || p.spec?.hostNetwork) return;
    const ips = [...new Set([p.status?.podIP, ...(p.status?.podIPs ?? []).map((x) => x.ip)].filter((x): x is string => typeof x === 'string' && x !== ''))];
    const workload = `${p.metadata.namespace ?? 'default'}/${p.spec?.serviceAccountName || 'default'}`;
    for (const ip of ips) this.#byIp.set(ip, { pod: key, workload });
    this.#ipsOf.set(key, ips);
  }

  /** `namespace/serviceaccount` of the pod with this address, or undefined. */
  of(ip: string): string | undefined {
    return this.#byIp.get(ip)?.workload;
  }

  close(): void {
    this.#informer.close();
  }
}
