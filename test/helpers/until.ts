// Waiting for a condition in tests: polls `fn` (which may be async) until it returns something truthy (that
// value is the result) or `ms` pass, then fails naming `what`.
export async function until<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, ms = 15_000, stepMs = 10): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
