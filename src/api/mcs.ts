// multicluster.x-k8s.io/v1alpha1: the Multi-Cluster Services API of KEP-1645 (sig-multicluster), written here
// from the KEP's text. A ServiceExport has no spec: it exports the Service of its namespace and name, and the
// controller reports on it in status.conditions. A ServiceImport is what the controller writes in every member:
// the aggregated service's type, ports, address and session affinity, and the exporting clusters in its status.
// Each kind has its TypeScript type and one structural schema, which both validation (validate.ts) and the CRDs
// (crds.ts) use, as for flomesh.io (flomesh.ts).
import { type Condition, type ObjectMeta, conditionProperties } from './flomesh.js';
import type { Schema } from './schema.js';

export const MCS_GROUP = 'multicluster.x-k8s.io';
export const MCS_VERSION = 'v1alpha1';
export const MCS_API_VERSION = `${MCS_GROUP}/${MCS_VERSION}`;

/** The Service of the same namespace and name is exported to the cluster set. */
export interface McsServiceExport {
  apiVersion: typeof MCS_API_VERSION;
  kind: 'ServiceExport';
  metadata: ObjectMeta;
  status?: { conditions?: Condition[] };
}

/** A port of an imported service: a Service's port without targetPort or nodePort. */
export interface McsServicePort {
  name?: string;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  appProtocol?: string;
  port: number;
}

export interface McsServiceImportSpec {
  type: 'ClusterSetIP' | 'Headless';
  ports: McsServicePort[];
  /** The address of the service in this cluster (at most one in v1alpha1); none for Headless. */
  ips?: string[];
  sessionAffinity?: 'None' | 'ClientIP';
  sessionAffinityConfig?: { clientIP?: { timeoutSeconds?: number } };
}

/** The aggregated service as one member imports it. */
export interface McsServiceImport {
  apiVersion: typeof MCS_API_VERSION;
  kind: 'ServiceImport';
  metadata: ObjectMeta;
  spec: McsServiceImportSpec;
  /** The clusters that export the service (their cluster ids: the names of their Cluster resources). */
  status?: { clusters?: { cluster: string }[] };
}

export type McsResource = McsServiceExport | McsServiceImport;
export type McsKind = McsResource['kind'];

/** The export conditions of KEP-1645 (Valid, Conflict) and Ready (the imports are written in every member). */
export type McsExportConditionType = 'Valid' | 'Conflict' | 'Ready';

/** What makes each kind (as flomesh.ts's KindInfo); a ServiceExport has no spec. */
export interface McsKindInfo {
  kind: McsKind;
  plural: string;
  singular: string;
  shortNames: string[];
  scope: 'Namespaced';
  spec?: Schema;
  status: Schema;
  columns: { name: string; type: 'string' | 'integer' | 'date'; jsonPath: string }[];
}

const conditions: Schema = {
  type: 'array',
  'x-kubernetes-list-type': 'map',
  'x-kubernetes-list-map-keys': ['type'],
  items: {
    type: 'object',
    required: ['type', 'status'],
    properties: conditionProperties,
  },
};

const condition = (type: McsExportConditionType) => ({ name: type, type: 'string', jsonPath: `.status.conditions[?(@.type=='${type}')].status` }) as const;
const age = { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' } as const;

export const MCS_KINDS: Record<McsKind, McsKindInfo> = {
  ServiceExport: {
    kind: 'ServiceExport',
    plural: 'serviceexports',
    singular: 'serviceexport',
    shortNames: ['svcex'],
    scope: 'Namespaced',
    status: { type: 'object', properties: { conditions } },
    columns: [condition('Valid'), condition('Conflict'), condition('Ready'), age],
  },
  ServiceImport: {
    kind: 'ServiceImport',
    plural: 'serviceimports',
    singular: 'serviceimport',
    shortNames: ['svcim'],
    scope: 'Namespaced',
    spec: {
      type: 'object',
      required: ['ports'],
      properties: {
        type: { type: 'string', enum: ['ClusterSetIP', 'Headless'], description: 'ClusterSetIP: reached at ips; Headless: no address of its own' },
        ports: {
          type: 'array',
          'x-kubernetes-list-type': 'atomic',
          items: {
            type: 'object',
            required: ['port'],
            properties: {
              name: { type: 'string', description: 'unique among the ports; optional when there is only one' },
              protocol: { type: 'string', enum: ['TCP', 'UDP', 'SCTP'], default: 'TCP' },
              appProtocol: { type: 'string' },
              port: { type: 'integer', minimum: 1, maximum: 65535, description: 'port of the imported service' },
            },
          },
        },
        ips: { type: 'array', maxItems: 1, items: { type: 'string', minLength: 1 }, description: 'the address of the service in this cluster' },
        sessionAffinity: { type: 'string', enum: ['None', 'ClientIP'] },
        sessionAffinityConfig: {
          type: 'object',
          properties: {
            clientIP: { type: 'object', properties: { timeoutSeconds: { type: 'integer', minimum: 1, maximum: 86400 } } },
          },
        },
      },
    },
    status: {
      type: 'object',
      properties: {
        clusters: {
          type: 'array',
          description: 'the clusters that export the service',
          'x-kubernetes-list-type': 'map',
          'x-kubernetes-list-map-keys': ['cluster'],
          items: { type: 'object', required: ['cluster'], properties: { cluster: { type: 'string', minLength: 1 } } },
        },
      },
    },
    columns: [
      { name: 'Type', type: 'string', jsonPath: '.spec.type' },
      { name: 'IP', type: 'string', jsonPath: '.spec.ips' },
      age,
    ],
  },
};

/** Whether an object (a parsed document, or one from an API) is of the MCS API group, whatever its version. */
export const isMcsApiVersion = (apiVersion: unknown): boolean => typeof apiVersion === 'string' && apiVersion.startsWith(`${MCS_GROUP}/`);
