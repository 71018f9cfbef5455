// `ecnet local supervise`, started by `up`: for the whole cluster set, the control plane, and per member what a
// Kubernetes control plane and kube-proxy would do locally: EndpointSlices from the running pods, pods' hosts
// files, and the node's Service rules (nftables in the node's network namespace).
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Service } from '../api/core.js';
import { memberConnector } from '../controlplane/connect.js';
import { Controller } from '../controlplane/controller.js';
import { componentLogger } from '../logger.js';
import { LocalSource } from '../sources/local.js';
import { Kinds } from '../sources/source.js';
import { type LocalPod, NETNS_ANNOTATION, PID_ANNOTATION, SLICE_SUFFIX, desiredSlices, hostsText } from './endpoints.js';
import type { EndpointSlice } from '../api/core.js';
import { defaults, leaderElectionDefaults } from '../defaults.js';
import { SecretVolumes, secretVolumesOf } from './secret-volumes.js';
import { kubeProxyRuleset } from './kube-proxy.js';
import { hostsFile } from './net.js';
import { CONTROL_PLANE, type MemberTopology, member } from './topology.js';


/** Whether a process runs: exists and is not a zombie (processes `up` started outlive it and may wait unreaped). */
export const pidAlive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
};

/** Keeps one member's EndpointSlices, hosts files and node Service rules in step with its pods and Services. */
class MemberHousekeeper {
  readonly #src: LocalSource;
  #timer: NodeJS.Timeout | undefined;
  #last = '';
  #lastRules = '';
  readonly #log = componentLogger('local');

  constructor(src: LocalSource, readonly node: MemberTopology) {
    this.#src = src;
    const trigger = () => this.#schedule();
    this.#src.informer(Kinds.Service, { onEvent: trigger });
    this.#src.informer(Kinds.Pod, { onEvent: trigger });
    this.#src.informer(Kinds.EndpointSlice, { onEvent: trigger });
    // A pod's process ending is no event: look every second.
    setInterval(trigger, 1000).unref();
  }

  #schedule(): void {
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#sync().catch((err: unknown) => this.#log.warn({ err }, 'endpoints sync failed'));
    }, 20);
  }

  async #sync(): Promise<void> {
    const services = await this.#src.list<Service & { apiVersion: string }>(Kinds.Service);
    const pods = await this.#src.list<LocalPod & { apiVersion: string }>(Kinds.Pod);
    const alive = (p: LocalPod) => pidAlive(Number(p.metadata.annotations?.[PID_ANNOTATION]));
    const slices = desiredSlices(services, pods, alive);
    const state = JSON.stringify([slices, services.map((s) => [s.metadata.name, s.metadata.namespace, s.spec.clusterIP]), pods.map((p) => p.metadata.name)]);
    if (state !== this.#last) {
      await this.#syncSlices(services, pods, slices);
      this.#last = state;
    }
    this.#syncRules(services, await this.#src.list<EndpointSlice & { apiVersion: string }>(Kinds.EndpointSlice));
  }

  /** kube-proxy's rules in the node's namespace, replaced in one `nft -f` when they change. */
  #syncRules(services: Service[], slices: EndpointSlice[]): void {
    const rules = kubeProxyRuleset({ services, endpointSlices: slices, nodeIp: this.node.underlayIp, serviceCidr: defaults.serviceCidr });
    if (rules === this.#lastRules) return;
    // Remembered also when nft refuses it: the same ruleset is not tried (and logged) again every second.
    this.#lastRules = rules;
    const r = spawnSync('ip', ['netns', 'exec', this.node.nodeNs, 'nft', '-f', '-'], { input: rules, encoding: 'utf8' });
    if (r.status !== 0) this.#log.warn({ node: this.node.nodeNs, stderr: r.stderr }, 'nft refused the Service rules; the previous ones stay');
  }

  async #syncSlices(services: (Service & { apiVersion: string })[], pods: (LocalPod & { apiVersion: string })[], slices: EndpointSlice[]): Promise<void> {
    const existing = (await this.#src.list(Kinds.EndpointSlice)).filter((s) => s.metadata.name.endsWith(SLICE_SUFFIX));
    for (const s of slices) await this.#src.apply(s as never, { manager: 'ecnet-local' });
    for (const e of existing) {
      if (!slices.some((s) => s.metadata.name === e.metadata.name && s.metadata.namespace === e.metadata.namespace)) {
        await this.#src.delete(Kinds.EndpointSlice, e.metadata.name, e.metadata.namespace);
      }
    }
    for (const p of pods) {
      const ns = p.metadata.annotations?.[NETNS_ANNOTATION];
      if (ns && existsSync(hostsFile(ns))) writeFileSync(hostsFile(ns), hostsText(p, services)); // in place: ip netns exec bind-mounts it
    }
  }
}

export async function supervise(clustersDir: string, members: string[]): Promise<() => Promise<void>> {
  const controlPlane = new LocalSource({ dir: join(clustersDir, CONTROL_PLANE) });
  // As `ecnet controller` runs by default: the cluster set's CA, and each member's certificate.
  const identities = { namespace: leaderElectionDefaults.namespace, clusterSet: defaults.clusterSet, ttlMs: defaults.identityTtlMs };
  const controller = new Controller({ controlPlane, connect: memberConnector({ controlPlane, clustersDir }), memberTimeoutMs: 60_000, resyncMs: 10_000, identities });
  await controller.start();
  const mounts = secretVolumesOf(['agent', 'gateway']);
  for (const [i, m] of members.entries()) {
    // One view of the member's directory for both: its scan and watch are not done twice.
    const src = new LocalSource({ dir: join(clustersDir, m), rescanMs: 1000 });
    new MemberHousekeeper(src, member(m, i));
    new SecretVolumes(src, dirname(clustersDir), m, mounts);
  }
  return async () => {
    await controller.close();
    controlPlane.destroy();
  };
}
