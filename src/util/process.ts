// The life of a long-running command's process.

/**
 * Resolves with the first SIGINT or SIGTERM. Meanwhile the process is held open (watchers and timers are unref'd
 * so one-shot commands can exit); `release()` lets it go.
 */
export function untilSignal(): { signal: Promise<NodeJS.Signals>; release(): void } {
  const keepAlive = setInterval(() => undefined, 1 << 30);
  const signal = new Promise<NodeJS.Signals>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  return { signal, release: () => clearInterval(keepAlive) };
}
