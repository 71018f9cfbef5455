// Label selectors as `kubectl -l` takes them, the equality-based subset: `a=b,c!=d,e` (e: the label exists).
import { SourceError } from './source.js';

export type LabelMatcher = (labels: Record<string, string> | undefined) => boolean;

export function parseLabelSelector(selector: string | undefined): LabelMatcher {
  if (!selector?.trim()) return () => true;
  const terms = selector.split(',').map((t) => t.trim());
  const tests = terms.map((t): LabelMatcher => {
    const m = /^([A-Za-z0-9./_-]+)\s*(==|=|!=)?\s*([A-Za-z0-9._-]*)$/.exec(t);
    if (!m) throw new SourceError('ECNET_SOURCE_INVALID', `label selector term ${JSON.stringify(t)} is not key, key=value or key!=value`);
    const [, key, op, value] = m as unknown as [string, string, string | undefined, string];
    if (!op) return (l) => l?.[key] !== undefined;
    if (op === '!=') return (l) => l?.[key] !== value;
    return (l) => l?.[key] === value;
  });
  return (labels) => tests.every((t) => t(labels));
}
