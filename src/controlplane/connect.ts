// Where a member's resources are, from its Cluster resource: its kubeconfig (inline, as in the seed, or in a
// Secret of the control-plane cluster) means a Kubernetes API server; without one, in local mode, the member is
// the directory named like the Cluster beside the control-plane's directory.
import { join } from 'node:path';
import type { Secret } from '../api/core.js';
import type { Cluster } from '../api/flomesh.js';
import { defaults } from '../defaults.js';
import { openSource } from '../sources/open.js';
import { Kinds, type Source, SourceError } from '../sources/source.js';
import type { MemberConnector } from './members.js';

export interface ConnectorOptions {
  /** The control-plane cluster (Secrets holding member kubeconfigs are read there). */
  controlPlane: Source;
  /** Local mode: the directory holding one directory per cluster. Undefined: members need a kubeconfig. */
  clustersDir: string | undefined;
  /** Passed to local member sources. */
  serviceCidr?: string;
}

async function kubeconfigFromSecret(controlPlane: Source, c: Cluster): Promise<string> {
  const ref = c.spec.kubeconfigSecretRef!;
  const key = ref.key || 'kubeconfig';
  const secret = await controlPlane.get<Secret>(Kinds.Secret, ref.name, ref.namespace);
  if (!secret) throw new SourceError('ECNET_SOURCE_NOT_FOUND', `Cluster ${c.metadata.name}: Secret ${ref.namespace}/${ref.name} not found`);
  const text = secret.stringData?.[key] ?? (secret.data?.[key] !== undefined ? Buffer.from(secret.data[key], 'base64').toString('utf8') : undefined);
  if (!text) throw new SourceError('ECNET_SOURCE_INVALID', `Cluster ${c.metadata.name}: Secret ${ref.namespace}/${ref.name} has no key ${JSON.stringify(key)}`);
  return text;
}

export function memberConnector(options: ConnectorOptions): MemberConnector {
  return async (c) => {
    if (c.spec.kubeconfig || c.spec.kubeconfigSecretRef) {
      // Written by whoever may write Clusters or that Secret: inline credentials only (no exec, no files).
      return openSource({ kind: 'inline-kubeconfig', kubeconfig: c.spec.kubeconfig ?? (await kubeconfigFromSecret(options.controlPlane, c)) });
    }
    if (options.clustersDir !== undefined) {
      return openSource({ kind: 'local', dir: join(options.clustersDir, c.metadata.name), serviceCidr: options.serviceCidr || defaults.serviceCidr });
    }
    throw new SourceError('ECNET_SOURCE_INVALID', `Cluster ${c.metadata.name} has neither spec.kubeconfig nor spec.kubeconfigSecretRef`);
  };
}
