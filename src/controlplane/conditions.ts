// metav1.Condition bookkeeping: a condition's lastTransitionTime moves only when its status does. Pure.
import type { Condition } from '../api/flomesh.js';

export interface ConditionInput {
  type: string;
  status: Condition['status'];
  reason: string;
  message: string;
}

/**
 * The conditions an object's status holds, as far as they are conditions: a status read from a member's API
 * server is not checked by ecnet (a hostile member, or a CRD installed without its schema, can serve
 * `conditions: "x"` or entries that are not objects), and one such object must not fail every pass.
 */
export function wellFormed(existing: unknown): Condition[] {
  return Array.isArray(existing) ? existing.filter((c): c is Condition => typeof c === 'object' && c !== null && typeof (c as { type?: unknown }).type === 'string') : [];
}

/** The conditions to write: `desired` in order, then any other existing types left as they were. */
export function mergeConditions(existing: Condition[] | undefined, desired: ConditionInput[], now: string, generation?: number): Condition[] {
  const valid = wellFormed(existing);
  const old = new Map(valid.map((c) => [c.type, c]));
  const out: Condition[] = desired.map((d) => {
    const prev = old.get(d.type);
    return {
      ...d,
      lastTransitionTime: prev && prev.status === d.status ? prev.lastTransitionTime : now,
      ...(generation !== undefined ? { observedGeneration: generation } : {}),
    };
  });
  for (const c of valid) if (!desired.some((d) => d.type === c.type)) out.push(c);
  return out;
}

/** Whether writing `desired` would change what `existing` says (transition times aside). */
export function conditionsDiffer(existing: Condition[] | undefined, desired: ConditionInput[], generation?: number): boolean {
  const valid = wellFormed(existing);
  return desired.some((d) => {
    const c = valid.find((e) => e.type === d.type);
    return !c || c.status !== d.status || c.reason !== d.reason || c.message !== d.message || (generation !== undefined && c.observedGeneration !== generation);
  });
}

/** JSON with object keys sorted: equal values give equal text whatever order a server returned the keys in. */
export function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, value: unknown) =>
    value && typeof value === 'object' && !Array.isArray(value)
      ? Object.fromEntries(Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : value,
  );
}
