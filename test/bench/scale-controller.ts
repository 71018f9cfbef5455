// The controller of test/bench/scale-harness.ts's memory measurement, in a process of its own (run with
// --expose-gc): started against the hub whose kubeconfig is in ECNET_HUB_KUBECONFIG, as the controlled set
// starts it. IPC: 'started' answers once it has started; 'memory' answers process.memoryUsage() after GC.
import { memberConnector } from '../../src/controlplane/connect.js';
import { Controller } from '../../src/controlplane/controller.js';
import { setLogLevel } from '../../src/logger.js';
import { createKubernetesSource } from '../../src/sources/kubernetes.js';

setLogLevel(process.env.ECNET_LOG_LEVEL ?? 'error');
const hub = createKubernetesSource({ kubeconfig: process.env.ECNET_HUB_KUBECONFIG ?? '', backoff: { initialMs: 50, maxMs: 300, jitter: 0.2 } });
const controller = new Controller({ controlPlane: hub, connect: memberConnector({ controlPlane: hub, clustersDir: undefined }), memberTimeoutMs: 30_000, resyncMs: 600_000, debounceMs: 5 });
const started = controller.start();
const gc = (globalThis as { gc?: () => void }).gc;
process.on('message', (m) => {
  if (m === 'started') void started.then(() => process.send?.('started'));
  if (m === 'memory') {
    for (let i = 0; i < 3; i++) gc?.();
    process.send?.(process.memoryUsage());
  }
});
process.on('SIGTERM', () => {
  void controller.close().finally(() => {
    hub.destroy();
    process.exit(0);
  });
});
