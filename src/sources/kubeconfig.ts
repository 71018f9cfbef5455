// Loading and checking the kubeconfig a Kubernetes source (or another client of the same server, such as the
// leader election) uses. Separate from the source because it is the only part that reads files, runs
// client-node's loaders and decides which credentials are accepted (inline-only for kubeconfigs others can write).
import { KubeConfig } from '@kubernetes/client-node';
import { inlineKubeconfig } from './inline-kubeconfig.js';
import { errorMessage } from './kube-api.js';
import { SourceError } from './source.js';

/** Where a kubeconfig comes from; part of KubernetesSourceOptions. */
export interface KubeconfigOptions {
  /** Kubeconfig YAML text (e.g. inline from a Cluster resource). Wins over the options below. */
  kubeconfig?: string;
  kubeconfigPath?: string;
  /** The pod's service account (KUBERNETES_SERVICE_HOST/PORT and the mounted token, as client-node reads them). */
  inCluster?: boolean;
  /** Context to use instead of the kubeconfig's current-context. */
  context?: string;
  /**
   * The kubeconfig text comes from a resource others can write (a Cluster, a Secret): inline credentials only,
   * no exec or auth-provider plugin, no file; and no line of it in an error (see inline-kubeconfig.ts).
   */
  inlineOnly?: boolean;
}

/** The KubeConfig a source would use (checked as createKubernetesSource checks it); for other clients of the same server. */
export function loadKubeConfig(o: KubeconfigOptions): KubeConfig {
  const kc = new KubeConfig();
  const from =
    o.kubeconfig !== undefined
      ? 'the given kubeconfig text'
      : o.kubeconfigPath !== undefined
        ? o.kubeconfigPath
        : o.inCluster
          ? 'the in-cluster service account'
          : 'the default kubeconfig';
  const invalid = (message: string, cause?: unknown) =>
    new SourceError('ECNET_SOURCE_INVALID', `cannot use ${from}: ${message}`, cause === undefined ? undefined : { cause });
  if (o.inlineOnly && o.kubeconfig === undefined) throw invalid('only an inline kubeconfig is accepted here');
  try {
    // Inline-only: never client-node's loader (plugins, files, merge keys); the allowlisted fields alone.
    if (o.inlineOnly) kc.loadFromOptions(inlineKubeconfig(o.kubeconfig!));
    else if (o.kubeconfig !== undefined) kc.loadFromString(o.kubeconfig);
    else if (o.kubeconfigPath !== undefined) kc.loadFromFile(o.kubeconfigPath);
    else if (o.inCluster) kc.loadFromCluster();
    else kc.loadFromDefault();
  } catch (err) {
    if (err instanceof SourceError) throw err; // the allowlist's refusal, which quotes nothing
    // An inline kubeconfig's parse error quotes its text (a Secret's content): not passed on.
    if (o.inlineOnly) throw invalid('it does not load as a kubeconfig');
    throw invalid(errorMessage(err), err);
  }
  if (o.context !== undefined) {
    if (!kc.getContextObject(o.context)) throw invalid(`it has no context "${o.context}"`);
    kc.setCurrentContext(o.context);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster) {
    throw invalid(kc.getCurrentContext() ? `context "${kc.getCurrentContext()}" names no known cluster` : 'it sets no current-context');
  }
  let url: URL;
  try {
    url = new URL(cluster.server);
  } catch (err) {
    throw invalid(`cluster "${cluster.name}" has an invalid server URL ${JSON.stringify(cluster.server)}`, err);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw invalid(`cluster "${cluster.name}" server ${cluster.server} is neither https:// nor http://`);
  }
  // client-node refuses plain http unless the cluster says insecure-skip-tls-verify: fail here, not on first use.
  if (url.protocol === 'http:' && !cluster.skipTLSVerify && !cluster.proxyUrl) {
    throw invalid(`cluster "${cluster.name}" uses http:// without insecure-skip-tls-verify: true, which client-node refuses`);
  }
  return kc;
}
