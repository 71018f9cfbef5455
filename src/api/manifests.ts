// Multi-document YAML as `kubectl apply -f` takes it, checked document by document. Pure: text in, results out.
import { parseAllDocuments } from 'yaml';
import type { FlomeshResource } from './flomesh.js';
import type { McsResource } from './mcs.js';
import type { Problem } from './schema.js';
import { isChecked, validateResource } from './validate.js';

export interface ManifestDoc {
  /** 0-based position in the stream (empty documents are not counted). */
  index: number;
  /** 1-based line where the document starts. */
  line: number;
  kind: string;
  name: string;
  /** The validated resource with defaults, for flomesh.io and MCS API kinds; the document as parsed for any other kind. */
  resource?: FlomeshResource | McsResource | Record<string, unknown>;
  /** Errors: the document is refused. */
  problems: Problem[];
  /** Accepted anyway (unknown fields, dropped). */
  warnings: Problem[];
}

/** Parses and checks every document; YAML syntax errors are problems of their document, never exceptions. */
export function readManifests(text: string): ManifestDoc[] {
  const out: ManifestDoc[] = [];
  const lineOf = (offset: number) => text.slice(0, offset).split('\n').length;
  for (const doc of parseAllDocuments(text)) {
    // The document's own range starts at its `---`; its content is where a reader looks.
    const line = lineOf(doc.contents?.range?.[0] ?? doc.range[0]);
    if (doc.errors.length) {
      out.push({ index: out.length, line, kind: '?', name: '?', problems: doc.errors.map((e) => ({ path: '', message: `YAML: ${e.message}` })), warnings: [] });
      continue;
    }
    const value = doc.toJS() as unknown;
    if (value === null || value === undefined) continue;
    const d = value as { kind?: unknown; metadata?: { name?: unknown } };
    const kind = typeof d.kind === 'string' ? d.kind : '?';
    const name = typeof d.metadata?.name === 'string' ? d.metadata.name : '?';
        // A flomesh.io or multicluster.x-k8s.io document of an unknown kind or version is still checked (and refused), never passed over.
    if (!isChecked(value)) {
      // Not ours (Namespace, Deployment, Service, PropagationPolicy …): carried as it is.
      out.push({ index: out.length, line, kind, name, resource: value as Record<string, unknown>, problems: [], warnings: [] });
      continue;
    }
    const v = validateResource(value);
    out.push({ index: out.length, line, kind, name, ...(v.ok ? { resource: v.resource } : {}), problems: v.problems, warnings: v.warnings });
  }
  return out;
}
