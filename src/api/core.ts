// The few core/v1 fields ecnet reads of Kubernetes' own kinds (Service, Namespace, Secret). Only what is used.
import type { ObjectMeta } from './flomesh.js';

export interface ServicePort {
  name?: string;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  appProtocol?: string;
  port: number;
  targetPort?: number | string;
}

export interface ServiceSpec {
  type?: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
  clusterIP?: string;
  clusterIPs?: string[];
  selector?: Record<string, string>;
  ports?: ServicePort[];
  sessionAffinity?: 'None' | 'ClientIP';
  sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: number } };
  externalName?: string;
}

export interface Service {
  apiVersion: 'v1';
  kind: 'Service';
  metadata: ObjectMeta;
  spec: ServiceSpec;
}

export interface Namespace {
  apiVersion: 'v1';
  kind: 'Namespace';
  metadata: ObjectMeta;
}

export interface Secret {
  apiVersion: 'v1';
  kind: 'Secret';
  metadata: ObjectMeta;
  /** base64 values */
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}

/** A Service's ClusterIP(s) as the API server reports them; empty for headless and ExternalName services. */
export function clusterIPsOf(s: Service): string[] {
  const ips = s.spec.clusterIPs?.length ? s.spec.clusterIPs : s.spec.clusterIP ? [s.spec.clusterIP] : [];
  return ips.filter((ip) => ip !== 'None' && ip !== '');
}
