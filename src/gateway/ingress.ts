// The ServiceExport HTTP ingress rules ("ingress rules are created for the service", as the seed says): a plain
// HTTP request to the gateway whose path matches an exported service's rule goes to that service, with the
// export's pathRewrite applied. Pure.
import type { LocalService } from './catalog.js';

export interface IngressMatch {
  service: LocalService;
  port: number;
  /** The path (and query) to send upstream. */
  path: string;
}

function matches(pathname: string, rule: { path?: string; pathType: 'Exact' | 'Prefix' }): number {
  const p = rule.path ?? '/';
  if (rule.pathType === 'Exact') return pathname === p ? p.length + 1 : -1;
  // Prefix matches whole path segments, as Kubernetes Ingress does: /httpbin matches /httpbin and /httpbin/x, not /httpbinx.
  const base = p.endsWith('/') ? p.slice(0, -1) : p;
  return pathname === base || pathname.startsWith(`${base}/`) || base === '' ? base.length : -1;
}

/** The longest matching rule over all exported services (Exact beats Prefix of the same length). */
export function matchIngress(services: Iterable<LocalService>, url: string): IngressMatch | undefined {
  const q = url.indexOf('?');
  const pathname = q < 0 ? url : url.slice(0, q);
  const query = q < 0 ? '' : url.slice(q);
  let best: { score: number; match: IngressMatch } | undefined;
  for (const service of services) {
    const exp = service.export;
    for (const rule of exp?.rules ?? []) {
      if (rule.path === undefined) continue;
      const score = matches(pathname, rule);
      if (score < 0 || (best && best.score >= score)) continue;
      const port = rule.portNumber ?? [...service.ports.keys()][0];
      if (port === undefined) continue;
      const from = exp?.pathRewrite?.from;
      const rewritten = from && pathname.startsWith(from) ? `${exp.pathRewrite?.to ?? ''}${pathname.slice(from.length)}` : pathname;
      best = { score, match: { service, port, path: `${rewritten.startsWith('/') ? '' : '/'}${rewritten}${query}` } };
    }
  }
  return best?.match;
}
