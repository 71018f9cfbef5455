// A reader of the Prometheus text exposition format (version 0.0.4), strict enough to catch what a scraper
// would refuse: for `ecnet top`, which reads the agent's /metrics, and for the tests that check the output.
import { EcnetError } from '../errors.js';

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Family {
  name: string;
  type: string;
  help: string;
  samples: Sample[];
}

export class MetricsParseError extends EcnetError<'ECNET_METRICS_PARSE'> {
  constructor(line: number, why: string) {
    super('ECNET_METRICS_PARSE', `line ${line}: ${why}`);
  }
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseValue(text: string, line: number): number {
  // As Prometheus reads them (Go's ParseFloat): NaN and Inf in any case.
  const t = text.toLowerCase();
  if (t === '+inf' || t === 'inf' || t === '+infinity' || t === 'infinity') return Infinity;
  if (t === '-inf' || t === '-infinity') return -Infinity;
  if (t === 'nan') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new MetricsParseError(line, `bad value ${JSON.stringify(text)}`);
  return Number(text);
}

/** The labels in `{...}` starting at text[at] === '{'; returns them and the index after '}'. */
function parseLabels(text: string, at: number, line: number): [Record<string, string>, number] {
  const labels: Record<string, string> = {};
  let i = at + 1;
  for (;;) {
    if (text[i] === '}') return [labels, i + 1];
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new MetricsParseError(line, 'label without =');
    const name = text.slice(i, eq).trim();
    if (!LABEL.test(name)) throw new MetricsParseError(line, `bad label name ${JSON.stringify(name)}`);
    if (name in labels) throw new MetricsParseError(line, `label ${name} twice`);
    if (text[eq + 1] !== '"') throw new MetricsParseError(line, `label ${name}: value not quoted`);
    let v = '';
    let j = eq + 2;
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === '\\') {
        const n = text[++j];
        v += n === 'n' ? '\n' : n === '\\' ? '\\' : n === '"' ? '"' : (() => { throw new MetricsParseError(line, `bad escape \\${n}`); })();
      } else v += text[j];
    }
    if (j >= text.length) throw new MetricsParseError(line, 'unterminated label value');
    labels[name] = v;
    i = j + 1;
    if (text[i] === ',') i++;
    else if (text[i] !== '}') throw new MetricsParseError(line, 'expected , or } after a label');
  }
}

/** The families of a scrape, with their samples; throws MetricsParseError on anything malformed. */
export function parseMetrics(text: string): Map<string, Family> {
  const families = new Map<string, Family>();
  const seen = new Set<string>();
  const familyOf = (sample: string): Family | undefined => {
    for (const suffix of ['', '_bucket', '_sum', '_count', '_total']) {
      if (suffix && !sample.endsWith(suffix)) continue;
      const f = families.get(sample.slice(0, sample.length - suffix.length));
      if (f && (suffix === '' || (f.type === 'histogram' && suffix !== '_total') || (f.type === 'summary' && (suffix === '_sum' || suffix === '_count')))) return f;
    }
    return undefined;
  };
  const lines = text.split('\n');
  lines.forEach((raw, idx) => {
    const n = idx + 1;
    const line = raw.trim();
    if (!line) return;
    if (line.startsWith('#')) {
      const m = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(line);
      if (!m) return; // a comment
      const [, kind, name, rest = ''] = m;
      if (!NAME.test(name!)) throw new MetricsParseError(n, `bad metric name ${JSON.stringify(name)}`);
      let f = families.get(name!);
      if (!f) families.set(name!, (f = { name: name!, type: 'untyped', help: '', samples: [] }));
      if (kind === 'TYPE') {
        if (!TYPES.has(rest)) throw new MetricsParseError(n, `bad type ${JSON.stringify(rest)}`);
        if (f.samples.length) throw new MetricsParseError(n, `TYPE of ${name} after its samples`);
        f.type = rest;
      } else f.help = rest;
      return;
    }
    const brace = line.indexOf('{');
    const space = line.indexOf(' ');
    const nameEnd = brace >= 0 && (space < 0 || brace < space) ? brace : space;
    if (nameEnd <= 0) throw new MetricsParseError(n, 'sample without a value');
    const name = line.slice(0, nameEnd);
    if (!NAME.test(name)) throw new MetricsParseError(n, `bad metric name ${JSON.stringify(name)}`);
    let labels: Record<string, string> = {};
    let rest = line.slice(nameEnd);
    if (rest.startsWith('{')) {
      const [l, end] = parseLabels(line, nameEnd, n);
      labels = l;
      rest = line.slice(end);
    }
    const parts = rest.trim().split(/\s+/);
    if (parts.length < 1 || parts.length > 2 || !parts[0]) throw new MetricsParseError(n, 'expected a value (and an optional timestamp)');
    const value = parseValue(parts[0], n);
    const id = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seen.has(id)) throw new MetricsParseError(n, `duplicate series ${name}${JSON.stringify(labels)}`);
    seen.add(id);
    let f = familyOf(name);
    if (!f) families.set(name, (f = { name, type: 'untyped', help: '', samples: [] }));
    f.samples.push({ name, labels, value });
  });
  return families;
}

/** The sum of a family's samples whose labels include `match` (0 when none). */
export function sumOf(families: Map<string, Family>, name: string, match: Record<string, string> = {}, sample = name): number {
  const f = families.get(name);
  if (!f) return 0;
  return f.samples.filter((s) => s.name === sample && Object.entries(match).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
}
