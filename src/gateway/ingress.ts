// The ServiceExport HTTP ingress rules ("ingress rules are created for the service", as the seed says): a plain
// HTTP request to the gateway whose path matches an exported service's rule goes to that service, with the
// export's pathRewrite applied. The path space is shared by every team that exports: a namespace that claimed
// a path first keeps every request its rules match, so a newer export elsewhere cannot carve a path out of it
// (team B's Exact /api/login inside team A's Prefix /api). Pure.
import type { LocalService } from './catalog.js';

export interface IngressMatch {
  service: LocalService;
  port: number;
  /** The path (and query) to send upstream. */
  path: string;
}

export type IngressResult = IngressMatch | { refused: 400; reason: string } | undefined;

function matches(pathname: string, rule: { path?: string; pathType: 'Exact' | 'Prefix' }): number {
  const p = rule.path ?? '/';
  if (rule.pathType === 'Exact') return pathname === p ? p.length + 1 : -1;
  // Prefix matches whole path segments, as Kubernetes Ingress does: /httpbin matches /httpbin and /httpbin/x, not /httpbinx.
  const base = p.endsWith('/') ? p.slice(0, -1) : p;
  return pathname === base || pathname.startsWith(`${base}/`) || base === '' ? base.length : -1;
}

/**
 * Whether a path climbs or could be made to: `.` or `..` segments (also percent-encoded), and anything a backend
 * might decode into a separator or a dot (an encoded slash or backslash, a backslash, a double encoding).
 */
function climbs(pathname: string): boolean {
  if (/%2f|%5c|%25|\\/i.test(pathname)) return true;
  return pathname.split('/').some((seg) => {
    let s = seg;
    try {
      s = decodeURIComponent(seg);
    } catch {
      // an invalid escape is the backend's to refuse; it cannot be a dot segment
    }
    return s === '.' || s === '..';
  });
}

const older = (a: LocalService, b: LocalService): boolean => {
  const ta = a.exportedAt ?? '';
  const tb = b.exportedAt ?? '';
  return ta !== tb ? ta < tb : `${a.namespace}/${a.name}` < `${b.namespace}/${b.name}`;
};

/**
 * The rule a request goes to: among every matching rule, the namespace of the oldest export that matches owns
 * the request, and within it the longest match wins (Exact beats Prefix of the same length).
 */
export function matchIngress(services: Iterable<LocalService>, url: string): IngressResult {
  const q = url.indexOf('?');
  const pathname = q < 0 ? url : url.slice(0, q);
  const query = q < 0 ? '' : url.slice(q);
  if (climbs(pathname)) return { refused: 400, reason: 'a path with . or .. segments is not forwarded' };
  const found: { score: number; service: LocalService; port: number }[] = [];
  for (const service of services) {
    const exp = service.export;
    for (const rule of exp?.rules ?? []) {
      if (rule.path === undefined) continue;
      const score = matches(pathname, rule);
      if (score < 0) continue;
      const port = rule.portNumber ?? [...service.ports.keys()][0];
      if (port === undefined) continue;
      found.push({ score, service, port });
    }
  }
  if (!found.length) return undefined;
  const owner = found.reduce((a, b) => (older(b.service, a.service) ? b : a)).service.namespace;
  // Equal scores within the namespace: the older export, then namespace/name, so that every replica (whatever
  // order it saw the exports in) sends a request to the same service.
  const best = found.filter((f) => f.service.namespace === owner).reduce((a, b) => (b.score > a.score || (b.score === a.score && older(b.service, a.service)) ? b : a));
  const exp = best.service.export;
  const from = exp?.pathRewrite?.from;
  // The rewrite replaces whole segments only (from /api: /api and /api/x, not /api..), and what it makes is
  // checked again.
  const base = from?.endsWith('/') ? from.slice(0, -1) : from;
  const rewrites = base !== undefined && (pathname === base || pathname.startsWith(`${base}/`));
  const rewritten = rewrites ? `${exp?.pathRewrite?.to ?? ''}${pathname.slice(base!.length)}` : pathname;
  const path = `${rewritten.startsWith('/') ? '' : '/'}${rewritten}`;
  if (climbs(path)) return { refused: 400, reason: 'the rewritten path has . or .. segments' };
  return { service: best.service, port: best.port, path: `${path}${query}` };
}
