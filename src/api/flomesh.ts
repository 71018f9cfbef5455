// flomesh.io/v1alpha1: Cluster, ServiceExport, ServiceImport, GlobalTrafficPolicy, field for field as
// ErieCanal defines them (plus a Secret reference for a member's kubeconfig). Each kind has its TypeScript
// type and one structural schema, which both validation (validate.ts) and the CRDs (crds.ts) use.
import type { Schema } from './schema.js';

export const GROUP = 'flomesh.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

/** metav1.Condition */
export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration?: number;
}

interface Resource<K extends string, S, T> {
  apiVersion: typeof API_VERSION;
  kind: K;
  metadata: ObjectMeta;
  spec: S;
  status?: T;
}

/** `region/zone/group/name`: how a cluster is named in policies, imports and targetClusters. */
export type ClusterKey = string;
const DNS_LABEL = '[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?';
export const CLUSTER_KEY_PATTERN = `^${DNS_LABEL}/${DNS_LABEL}/${DNS_LABEL}/${DNS_LABEL}$`;

export interface ClusterSpec {
  region: string;
  zone: string;
  group: string;
  /** FQDN or IPv4 of the member's ecnet gateway. */
  gatewayHost?: string;
  gatewayPort: number;
  /** The member's kubeconfig inline, as in the seed (prefer kubeconfigSecretRef). */
  kubeconfig?: string;
  /** A Secret in the control-plane cluster holding the member's kubeconfig. */
  kubeconfigSecretRef?: { namespace: string; name: string; key: string };
}
export type Cluster = Resource<'Cluster', ClusterSpec, { conditions?: Condition[] }>;

export type PathType = 'Exact' | 'Prefix';
export type LoadBalancerAlgorithm = 'RoundRobinLoadBalancer' | 'HashingLoadBalancer' | 'LeastWorkLoadBalancer';
export interface ServiceExportSpec {
  serviceAccountName?: string;
  rules?: { portNumber?: number; path?: string; pathType: PathType }[];
  pathRewrite?: { from?: string; to?: string };
  sessionSticky?: boolean;
  loadBalancer: LoadBalancerAlgorithm;
  /** Empty: exported to every member. */
  targetClusters?: ClusterKey[];
}
export type ServiceExport = Resource<'ServiceExport', ServiceExportSpec, { conditions?: Condition[] }>;

export interface ImportEndpoint {
  clusterKey: ClusterKey;
  /** The exporting cluster's gateway. */
  target: { host: string; ip: string; port: number; path: string };
}
export interface ImportPort {
  name?: string;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  appProtocol?: string;
  port: number;
  endpoints: ImportEndpoint[];
}
export interface ServiceImportSpec {
  type: 'ClusterSetIP' | 'Headless';
  ips?: string[];
  ports: ImportPort[];
  sessionAffinity: 'None' | 'ClientIP';
  sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: number } };
  serviceAccountName?: string;
}
export type ServiceImport = Resource<'ServiceImport', ServiceImportSpec, { clusters?: { cluster: string; addresses?: string[] }[] }>;

export type LbType = 'Locality' | 'ActiveActive' | 'FailOver';
export interface GlobalTrafficPolicySpec {
  lbType: LbType;
  targets?: { clusterKey: ClusterKey; weight?: number }[];
}
export type GlobalTrafficPolicy = Resource<'GlobalTrafficPolicy', GlobalTrafficPolicySpec, Record<string, never>>;

export type FlomeshResource = Cluster | ServiceExport | ServiceImport | GlobalTrafficPolicy;
export type FlomeshKind = FlomeshResource['kind'];

const port = (description: string): Schema => ({ type: 'integer', minimum: 1, maximum: 65535, description });
const clusterKey = (description: string): Schema => ({ type: 'string', pattern: CLUSTER_KEY_PATTERN, description });

/** The properties of a metav1.Condition, as both APIs' schemas check them. */
export const conditionProperties: Record<string, Schema> = {
  type: { type: 'string', minLength: 1, maxLength: 316 },
  status: { type: 'string', enum: ['True', 'False', 'Unknown'] },
  reason: { type: 'string', maxLength: 1024 },
  message: { type: 'string', maxLength: 32768 },
  lastTransitionTime: { type: 'string', format: 'date-time' },
  observedGeneration: { type: 'integer', minimum: 0 },
};

const conditions: Schema = {
  type: 'array',
  'x-kubernetes-list-type': 'map',
  'x-kubernetes-list-map-keys': ['type'],
  items: {
    type: 'object',
    required: ['type', 'status', 'reason', 'message', 'lastTransitionTime'],
    properties: conditionProperties,
  },
};

/** What makes each kind: its schema (spec and status) and how the API server lists it. */
export interface KindInfo {
  kind: FlomeshKind;
  plural: string;
  singular: string;
  shortNames: string[];
  scope: 'Cluster' | 'Namespaced';
  spec: Schema;
  status: Schema;
  columns: { name: string; type: 'string' | 'integer' | 'date'; jsonPath: string }[];
}

const age = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' } as const;

export const KINDS: Record<FlomeshKind, KindInfo> = {
  Cluster: {
    kind: 'Cluster',
    plural: 'clusters',
    singular: 'cluster',
    shortNames: ['cls'],
    scope: 'Cluster',
    spec: {
      type: 'object',
      properties: {
        region: { type: 'string', default: 'default', pattern: `^${DNS_LABEL}$`, description: 'locality: region of the cluster' },
        zone: { type: 'string', default: 'default', pattern: `^${DNS_LABEL}$`, description: 'locality: zone of the cluster' },
        group: { type: 'string', default: 'default', pattern: `^${DNS_LABEL}$`, description: 'locality: group of the cluster' },
        gatewayHost: { type: 'string', description: "FQDN or IPv4 address of the member's ecnet gateway" },
        gatewayPort: { ...port("port of the member's ecnet gateway"), default: 80 },
        kubeconfig: { type: 'string', description: "the member's kubeconfig, inline (prefer kubeconfigSecretRef)" },
        kubeconfigSecretRef: {
          type: 'object',
          description: "a Secret in the control-plane cluster holding the member's kubeconfig",
          required: ['namespace', 'name'],
          properties: {
            namespace: { type: 'string', minLength: 1 },
            name: { type: 'string', minLength: 1 },
            key: { type: 'string', default: 'kubeconfig' },
          },
        },
      },
    },
    status: { type: 'object', properties: { conditions } },
    columns: [
      { name: 'Region', type: 'string', jsonPath: '.spec.region' },
      { name: 'Zone', type: 'string', jsonPath: '.spec.zone' },
      { name: 'Group', type: 'string', jsonPath: '.spec.group' },
      { name: 'Gateway Host', type: 'string', jsonPath: '.spec.gatewayHost' },
      { name: 'Gateway Port', type: 'integer', jsonPath: '.spec.gatewayPort' },
      { name: 'Managed', type: 'string', jsonPath: ".status.conditions[?(@.type=='Managed')].status" },
      { name: 'Managed Age', type: 'date', jsonPath: ".status.conditions[?(@.type=='Managed')].lastTransitionTime" },
      age,
    ],
  },
  ServiceExport: {
    kind: 'ServiceExport',
    plural: 'serviceexports',
    singular: 'serviceexport',
    shortNames: ['sexp'],
    scope: 'Namespaced',
    spec: {
      type: 'object',
      properties: {
        serviceAccountName: { type: 'string', description: 'ServiceAccount allowed to call the service ("*": any)' },
        rules: {
          type: 'array',
          minItems: 1,
          description: 'HTTP ingress rules the gateway serves for the service',
          items: {
            type: 'object',
            required: ['pathType'],
            properties: {
              portNumber: port('port of the service'),
              path: { type: 'string', pattern: '^/', description: 'request path, starting with /' },
              pathType: { type: 'string', enum: ['Exact', 'Prefix'] },
            },
          },
        },
        pathRewrite: {
          type: 'object',
          description: 'one rewrite for all rules: a path starting with `from` has it replaced by `to`',
          properties: { from: { type: 'string' }, to: { type: 'string' } },
        },
        sessionSticky: { type: 'boolean' },
        loadBalancer: {
          type: 'string',
          enum: ['RoundRobinLoadBalancer', 'HashingLoadBalancer', 'LeastWorkLoadBalancer'],
          default: 'RoundRobinLoadBalancer',
        },
        targetClusters: {
          type: 'array',
          description: 'clusters to export to (region/zone/group/name); empty: all',
          items: clusterKey('a cluster key'),
        },
      },
    },
    status: { type: 'object', properties: { conditions } },
    columns: [
      { name: 'Valid', type: 'string', jsonPath: ".status.conditions[?(@.type=='Valid')].status" },
      { name: 'Conflict', type: 'string', jsonPath: ".status.conditions[?(@.type=='Conflict')].status" },
      age,
    ],
  },
  ServiceImport: {
    kind: 'ServiceImport',
    plural: 'serviceimports',
    singular: 'serviceimport',
    shortNames: ['simp'],
    scope: 'Namespaced',
    spec: {
      type: 'object',
      required: ['ports'],
      properties: {
        type: { type: 'string', enum: ['ClusterSetIP', 'Headless'], default: 'ClusterSetIP' },
        ips: { type: 'array', maxItems: 2, items: { type: 'string', minLength: 1 }, description: 'VIP(s) of the derived Service' },
        ports: {
          type: 'array',
          'x-kubernetes-list-type': 'atomic',
          items: {
            type: 'object',
            required: ['port', 'endpoints'],
            properties: {
              name: { type: 'string' },
              protocol: { type: 'string', enum: ['TCP', 'UDP', 'SCTP'], default: 'TCP' },
              appProtocol: { type: 'string' },
              port: port('port of the imported service'),
              endpoints: {
                type: 'array',
                description: "the exporting clusters' gateways",
                items: {
                  type: 'object',
                  required: ['clusterKey', 'target'],
                  properties: {
                    clusterKey: clusterKey('the exporting cluster'),
                    target: {
                      type: 'object',
                      required: ['host', 'port'],
                      properties: {
                        host: { type: 'string', minLength: 1 },
                        ip: { type: 'string' },
                        port: port('port of the gateway'),
                        path: { type: 'string' },
                      },
                    },
                  },
                },
              },
            },
          },
        },
        sessionAffinity: { type: 'string', enum: ['None', 'ClientIP'], default: 'None' },
        sessionAffinityConfig: {
          type: 'object',
          properties: {
            clientIP: { type: 'object', properties: { timeoutSeconds: { type: 'integer', minimum: 1, maximum: 86400 } } },
          },
        },
        serviceAccountName: { type: 'string' },
      },
    },
    status: {
      type: 'object',
      properties: {
        clusters: {
          type: 'array',
          'x-kubernetes-list-type': 'map',
          'x-kubernetes-list-map-keys': ['cluster'],
          items: {
            type: 'object',
            required: ['cluster'],
            properties: { cluster: { type: 'string' }, addresses: { type: 'array', items: { type: 'string' } } },
          },
        },
      },
    },
    columns: [
      { name: 'Type', type: 'string', jsonPath: '.spec.type' },
      { name: 'IP', type: 'string', jsonPath: '.spec.ips' },
      age,
    ],
  },
  GlobalTrafficPolicy: {
    kind: 'GlobalTrafficPolicy',
    plural: 'globaltrafficpolicies',
    singular: 'globaltrafficpolicy',
    shortNames: ['gtp'],
    scope: 'Namespaced',
    spec: {
      type: 'object',
      properties: {
        lbType: { type: 'string', enum: ['Locality', 'ActiveActive', 'FailOver'], default: 'Locality' },
        targets: {
          type: 'array',
          items: {
            type: 'object',
            required: ['clusterKey'],
            properties: {
              clusterKey: clusterKey('a cluster, region/zone/group/name'),
              weight: { type: 'integer', minimum: 0, description: 'ActiveActive: relative share (default 100)' },
            },
          },
        },
      },
    },
    status: { type: 'object' },
    columns: [{ name: 'LB Type', type: 'string', jsonPath: '.spec.lbType' }, age],
  },
};

/**
 * The label on every Service of a member that has a ServiceImport of its name: the derived ones ecnet writes,
 * and a user's own Service of that name (the exporter's, say), where it is the one field ecnet writes on an
 * object it does not own. The EndpointSlice controller copies a Service's labels to its slices, so node agents
 * watch only Services and EndpointSlices with this label, not every one of their cluster.
 */
export const IMPORTED_LABEL = 'flomesh.io/service-import';
