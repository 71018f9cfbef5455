// The subset of OpenAPI v3 that Kubernetes structural schemas use, as plain data: each resource's schema is
// written once (flomesh.ts) and serves both validation here and the CRDs (crds.ts). Pure, no I/O.

export interface Schema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  enum?: (string | number)[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  minItems?: number;
  maxItems?: number;
  format?: string;
  /** A map with values of this schema (labels, annotations). */
  additionalProperties?: Schema;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-list-type'?: 'atomic' | 'set' | 'map';
  'x-kubernetes-list-map-keys'?: string[];
}

/** One thing wrong with a document, where it is: `spec.targets[1].weight: must be >= 0`. */
export interface Problem {
  path: string;
  message: string;
  /** Accepted anyway (as the API server accepts and prunes unknown fields), but worth saying. */
  warning?: true;
}

export const formatProblem = (p: Problem): string => `${p.warning ? 'warning: ' : ''}${p.path ? `${p.path}: ` : ''}${p.message}`;

const typeOf = (v: unknown): string =>
  v === null ? 'null' : Array.isArray(v) ? 'array' : Number.isInteger(v) ? 'integer' : typeof v;

const join = (path: string, key: string): string => (path ? `${path}.${key}` : key);

/** Every way `value` breaks `schema`, each with its field path. Never throws. */
export function validateSchema(schema: Schema, value: unknown, path = ''): Problem[] {
  const problems: Problem[] = [];
  const bad = (message: string) => problems.push({ path, message });
  const t = typeOf(value);
  if (schema.type) {
    const ok = schema.type === t || (schema.type === 'number' && t === 'integer');
    if (!ok) {
      bad(`must be ${schema.type === 'integer' ? 'an integer' : `a${/^[aeio]/.test(schema.type) ? 'n' : ''} ${schema.type}`}, got ${t}`);
      return problems;
    }
  }
  if (schema.enum && !schema.enum.includes(value as string | number)) {
    bad(`must be one of ${schema.enum.map((e) => JSON.stringify(e)).join(', ')}, got ${JSON.stringify(value)}`);
  }
  if (typeof value === 'number') {
    if (schema.minimum !== undefined && value < schema.minimum) bad(`must be >= ${schema.minimum}`);
    if (schema.maximum !== undefined && value > schema.maximum) bad(`must be <= ${schema.maximum}`);
  }
  if (typeof value === 'string') {
    if (schema.minLength !== undefined && value.length < schema.minLength) {
      bad(schema.minLength === 1 ? 'must not be empty' : `must be at least ${schema.minLength} characters`);
    }
    if (schema.maxLength !== undefined && value.length > schema.maxLength) bad(`must be at most ${schema.maxLength} characters`);
    if (schema.pattern !== undefined && !new RegExp(schema.pattern).test(value)) {
      bad(`${JSON.stringify(value)} does not match ${schema.pattern}`);
    }
  }
  if (Array.isArray(value)) {
    if (schema.minItems !== undefined && value.length < schema.minItems) bad(`must have at least ${schema.minItems} item(s)`);
    if (schema.maxItems !== undefined && value.length > schema.maxItems) bad(`must have at most ${schema.maxItems} item(s)`);
    if (schema.items) value.forEach((item, i) => problems.push(...validateSchema(schema.items!, item, `${path}[${i}]`)));
  }
  if (t === 'object') {
    const obj = value as Record<string, unknown>;
    for (const key of schema.required ?? []) {
      if (obj[key] === undefined || obj[key] === null) problems.push({ path: join(path, key), message: 'is required' });
    }
    for (const [key, v] of Object.entries(obj)) {
      if (v === undefined) continue;
      const sub = schema.properties?.[key] ?? schema.additionalProperties;
      if (sub) problems.push(...validateSchema(sub, v, join(path, key)));
      else if (schema.properties && !schema['x-kubernetes-preserve-unknown-fields']) {
        // The API server prunes unknown fields; a warning says so instead of losing them silently.
        problems.push({ path: join(path, key), message: 'unknown field (dropped, as the API server does)', warning: true });
      }
    }
  }
  return problems;
}

/** A copy of a valid `value` as the API server stores it: unknown fields pruned, absent defaults filled in. */
export function normalize<T>(schema: Schema, value: T): T {
  if (value === undefined && schema.default !== undefined) return structuredClone(schema.default) as T;
  if (Array.isArray(value) && schema.items) return value.map((v) => normalize(schema.items!, v)) as T;
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const out: Record<string, unknown> = {};
    for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
      const sub = schema.properties?.[key] ?? schema.additionalProperties;
      if (sub) out[key] = normalize(sub, v);
      else if (!schema.properties || schema['x-kubernetes-preserve-unknown-fields']) out[key] = v;
    }
    for (const [key, sub] of Object.entries(schema.properties ?? {})) {
      if (out[key] === undefined && sub.default !== undefined) out[key] = structuredClone(sub.default);
    }
    return out as T;
  }
  return value;
}
