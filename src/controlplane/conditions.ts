// metav1.Condition bookkeeping: a condition's lastTransitionTime moves only when its status does. Pure.
import type { Condition } from '../api/flomesh.js';

export interface ConditionInput {
  type: string;
  status: Condition['status'];
  reason: string;
  message: string;
}

/** The conditions to write: `desired` in order, then any other existing types left as they were. */
export function mergeConditions(existing: Condition[] | undefined, desired: ConditionInput[], now: string, generation?: number): Condition[] {
  const old = new Map((existing ?? []).map((c) => [c.type, c]));
  const out: Condition[] = desired.map((d) => {
    const prev = old.get(d.type);
    return {
      ...d,
      lastTransitionTime: prev && prev.status === d.status ? prev.lastTransitionTime : now,
      ...(generation !== undefined ? { observedGeneration: generation } : {}),
    };
  });
  for (const c of existing ?? []) if (!desired.some((d) => d.type === c.type)) out.push(c);
  return out;
}

/** Whether writing `desired` would change what `existing` says (transition times aside). */
export function conditionsDiffer(existing: Condition[] | undefined, desired: ConditionInput[], generation?: number): boolean {
  return desired.some((d) => {
    const c = existing?.find((e) => e.type === d.type);
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
