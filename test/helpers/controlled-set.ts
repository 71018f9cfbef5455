// A cluster set on in-memory API servers: a hub holding one Cluster per member (with the member's kubeconfig
// inline) and a controller watching it through the real client, as `ecnet controller --kubeconfig` runs.
import type { Cluster } from '../../src/api/flomesh.js';
import { memberConnector } from '../../src/controlplane/connect.js';
import { Controller } from '../../src/controlplane/controller.js';
import { createKubernetesSource } from '../../src/sources/kubernetes.js';
import type { Source } from '../../src/sources/source.js';
import { type KubeApiServer, type KubeApiServerOptions, startKubeApiServer } from './kube-api-server.js';

export interface ControlledSet {
  hubServer: KubeApiServer;
  hub: Source;
  controller: Controller;
  /** Stops the controller and the hub's client, and closes the hub's and `members`' servers. */
  close(): Promise<void>;
}

/** Registers `members` (name → its API server) on a new hub, gateway addresses `<subnet>.4`, `.5`, …, and starts a controller. */
export async function startControlledSet(
  members: [string, KubeApiServer][],
  o: {
    subnet: string;
    resyncMs: number;
    hub?: KubeApiServerOptions;
    concurrency?: number;
    /** The controller issues cluster identities (Secrets in ecnet-system, which it makes in every server). */
    identities?: boolean;
    /** Each member's kubeconfig in a Secret of the hub (kubeconfigSecretRef) rather than inline. */
    kubeconfigSecrets?: boolean;
  },
): Promise<ControlledSet> {
  const hubServer = await startKubeApiServer(o.hub);
  const system = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'ecnet-system' } };
  if (o.identities || o.kubeconfigSecrets) for (const s of [hubServer, ...members.map(([, m]) => m)]) s.put(system);
  for (const [i, [name, s]] of members.entries()) {
    if (o.kubeconfigSecrets) {
      hubServer.put({ apiVersion: 'v1', kind: 'Secret', metadata: { name: `${name}-kubeconfig`, namespace: 'ecnet-system' }, stringData: { kubeconfig: s.kubeconfig } });
    }
    const access = o.kubeconfigSecrets ? { kubeconfigSecretRef: { namespace: 'ecnet-system', name: `${name}-kubeconfig` } } : { kubeconfig: s.kubeconfig };
    hubServer.put({
      apiVersion: 'flomesh.io/v1alpha1',
      kind: 'Cluster',
      metadata: { name },
      spec: { region: 'default', zone: 'default', group: 'default', gatewayHost: `${o.subnet}.${4 + i}`, gatewayPort: 80, ...access },
    } as Cluster);
  }
  const hub = createKubernetesSource({ kubeconfig: hubServer.kubeconfig, backoff: { initialMs: 50, maxMs: 300, jitter: 0.2 } });
  const controller = new Controller({ controlPlane: hub, connect: memberConnector({ controlPlane: hub, clustersDir: undefined }), memberTimeoutMs: 3_000, resyncMs: o.resyncMs, debounceMs: 5, ...(o.concurrency ? { concurrency: o.concurrency } : {}), ...(o.identities ? { identities: { namespace: 'ecnet-system', clusterSet: 'scale.test' } } : {}) });
  await controller.start();
  return {
    hubServer,
    hub,
    controller,
    close: async () => {
      await controller.close();
      hub.destroy();
      await Promise.all([hubServer, ...members.map(([, s]) => s)].map((s) => s.close()));
    },
  };
}
