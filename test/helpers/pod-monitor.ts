// The Prometheus Operator's PodMonitor (monitoring.coreos.com/v1), checked by hand (test/helpers/monitor-schema.ts).
import { monitorProblems, POD_MONITOR } from './monitor-schema.js';

export const podMonitorProblems = (doc: Record<string, any>): string[] => monitorProblems(doc, POD_MONITOR);
