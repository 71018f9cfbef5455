// The Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1), checked by hand (test/helpers/monitor-schema.ts).
import { monitorProblems, SERVICE_MONITOR } from './monitor-schema.js';

export const serviceMonitorProblems = (doc: Record<string, any>): string[] => monitorProblems(doc, SERVICE_MONITOR);
