// Narrowing what was parsed from YAML or JSON.

/** A plain mapping: an object, not null and not an array. */
export const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
