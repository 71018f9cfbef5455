// A Source from its configuration: the one place that picks an implementation. The kubernetes one is loaded
// only when used: @kubernetes/client-node takes about half a second to import, which one-shot local commands
// (`ecnet get --cluster DIR`) should not pay.
import type { SourceConfig } from '../config.js';
import { LocalSource } from './local.js';
import type { Source } from './source.js';

/** A kubeconfig as text from a resource others can write (a Cluster, a Secret): inline credentials only (see inline-kubeconfig.ts). */
export interface InlineKubeconfigConfig {
  kind: 'inline-kubeconfig';
  kubeconfig: string;
}

export async function openSource(config: SourceConfig | InlineKubeconfigConfig, options: { watch?: boolean } = {}): Promise<Source> {
  if (config.kind === 'local') return new LocalSource({ dir: config.dir, serviceCidr: config.serviceCidr, watch: options.watch ?? true });
  const { createKubernetesSource } = await import('./kubernetes.js');
  if (config.kind === 'inline-kubeconfig') return createKubernetesSource({ kubeconfig: config.kubeconfig, inlineOnly: true });
  return createKubernetesSource({
    ...(config.inCluster ? { inCluster: true } : {}),
    ...(config.kubeconfigPath ? { kubeconfigPath: config.kubeconfigPath } : {}),
    ...(config.context ? { context: config.context } : {}),
  });
}
