// kubectl-style plain columns: easy to read, easy to grep/awk.

/** Renders rows under upper-case headers, columns padded to their widest cell. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) => r.map((c, i) => (i === r.length - 1 ? c : (c ?? '').padEnd(widths[i]! + 2))).join('').trimEnd())
    .join('\n');
}
