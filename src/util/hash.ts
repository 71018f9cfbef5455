// FNV-1a, 32 bits: a small stable hash of a string (ids shown by the CLI, ClusterIPs allocated in local mode).
// Not for anything an attacker may aim at.
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}
